"""`drivetl predict`: a checkpoint (adapters on their base, an ONNX export) + frames -> detection files."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Run a detector on new frames (a team folder or one of its splits, Waymo TFRecords, or the training "
    "cache) and write one JSON per frame in the team label schema under OUT/frames/, renders of a few "
    "frames and OUT/report.html. Resumable: frames already written are skipped. --ckpt takes a "
    "`drivetl pretrain`/`drivetl finetune` checkpoint or ADAPTER.safetensors@BASE.ckpt; --onnx an "
    "export of `drivetl export onnx`, run with onnxruntime."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl predict`."""
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt", metavar="CKPT", help="checkpoint, or ADAPTER.safetensors@BASE.ckpt")
    model.add_argument(
        "--onnx", type=Path, metavar="MODEL.onnx", help="a model written by drivetl export onnx"
    )
    parser.add_argument("--data", required=True, type=Path, help="team folder, Waymo TFRecords or a cache")
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (created; resumed when it exists)"
    )
    parser.add_argument("--split", help="predict this split of a team folder (splits/SPLIT.txt)")
    parser.add_argument(
        "--format", default="auto", choices=("auto", "team", "waymo", "waymo-v2", "cache"), help="data format"
    )
    parser.add_argument("--max-frames", type=int, help="predict only the first N frames")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.05,
        help="boxes scoring below it are not written (default 0.05, as evaluate; raise it for pseudo-labels)",
    )
    parser.add_argument("--render", type=int, default=3, metavar="N", help="frames rendered (default 3)")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per forward pass (default 4)")
    parser.add_argument("--workers", type=int, default=0, help="data loading worker processes (default 0)")
    parser.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="leave out frames that cannot be read, counted and named in the report (default: stop "
        "with one line naming the frame); the first frame must read either way",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--overwrite", action="store_true", help="predict every frame again")
    from drivetl.commands._tta import add_tta_argument

    add_tta_argument(parser, "none", "a --ckpt model, as drivetl evaluate --tta")


def run(args: argparse.Namespace) -> int:
    """Run `drivetl predict`; returns the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from drivetl.workflows.predict import predict

    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    console = Console(stderr=True)
    bars: list[Progress] = []  # started with the first batch: an early error prints only its own line

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(
                Progress(
                    TextColumn("predict"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=console,
                )
            )
            bars[0].start()
            bars[0].add_task("predict", total=total)
        bars[0].update(bars[0].task_ids[0], completed=done, total=total)

    try:
        summary = predict(
            args.ckpt,
            args.data,
            args.out,
            onnx=args.onnx,
            split=args.split,
            data_format=args.format,
            max_frames=args.max_frames,
            score_threshold=args.score_threshold,
            render=args.render,
            batch_size=args.batch_size,
            device=device,
            workers=args.workers,
            overwrite=args.overwrite,
            skip_corrupt=args.skip_corrupt,
            tta=args.tta,
            log=lambda msg: console.print(msg, markup=False, highlight=False),
            progress=progress,
        )
    finally:
        if bars:
            bars[0].stop()
    print(
        f"{summary.predicted} frames predicted, {summary.skipped} already there; "
        f"{summary.frames_per_second:.2f} frames/s; {summary.detections} boxes"
    )
    if summary.corrupt:
        print(
            f"{len(summary.corrupt)} frames skipped as unreadable (listed in predict.json; a rerun "
            "into the same folder tries them again)"
        )
    print(f"predictions: {summary.out / 'frames'}")
    if summary.report is not None:
        print(f"report: {summary.report}")
    return 0
