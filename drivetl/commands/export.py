"""`drivetl export onnx`: a (LoRA-merged) detector -> an ONNX file with metadata, checked with onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Export a detector for deployment. `onnx`: LoRA merged into the weights, FiLM fixed for one rig, "
    "BatchNorm folded; the graph starts from per-point pillar features, each point's pillar and the "
    "pillar cells (pre-processing drivetl.pillars/2, docs/predict.md) and returns heatmaps and box "
    "regression; classes, grid, point columns, the box coding and decoding parameters, rig and the "
    "checkpoint's sha256 are in the file's metadata. The file is written only when onnxruntime "
    "reproduces the torch model to 1e-4."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl export`."""
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    onnx = sub.add_parser("onnx", help="ONNX with metadata (onnxruntime checked)", description=DESCRIPTION)
    onnx.add_argument(
        "--ckpt", required=True, metavar="CKPT", help="checkpoint, or ADAPTER.safetensors@BASE.ckpt"
    )
    onnx.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    onnx.add_argument(
        "--rig", type=Path, help="rig.yaml (or a team folder) the export is for; required for FiLM adapters"
    )
    onnx.add_argument(
        "--opset",
        type=int,
        default=18,
        help="ONNX opset (default 18, the lowest with the scatter-max the graph uses)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `drivetl export`; returns the exit code."""
    from drivetl.workflows.export_onnx import export_onnx

    result = export_onnx(args.ckpt, args.out, rig=args.rig, opset=args.opset)
    m = result.metadata
    print(
        f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB): classes {m['classes']}, "
        f"rig {m['rig']}, LoRA layers merged {m['lora_merged']}, BatchNorm folded {m['batchnorm_folded']}, "
        f"onnxruntime vs torch max |diff| {result.max_abs_diff:.1e}"
    )
    return 0
