"""Export a detector to ONNX (`drivetl export onnx`): adapters merged, BatchNorm folded, metadata inside.

``export_onnx("adapters.safetensors@pretrained.ckpt", "model.onnx", rig="fleet/rig.yaml")``:

1. loads the model as evaluate does (a checkpoint, or adapters on their base);
2. makes it plain (`drivetl.workflows._onnx_graph.plain_detector`): LoRA merged into the weights,
   FiLM fixed for the export's rig, BatchNorm folded where it directly follows a Conv2d/Linear;
3. exports `PillarGraph` with torch's ONNX exporter (torch.export based, opset >= 18 for the
   scatter-max), with dynamic point and pillar counts: inputs ``features`` (N, F), ``pillar_index``
   (N,), ``coords`` (P, 2); outputs ``heatmap`` (1, classes, H, W) and ``regression`` (1, C, H, W)
   (C = 8, or 9 with a direction classifier; ``postprocess.coding`` says how to decode it);
4. writes metadata (``metadata_props``, values JSON): ``drivetl.format``, ``classes``,
   ``canonical_classes``, ``grid`` (voxel size, point range, BEV output geometry), ``columns``,
   ``preprocess`` (the version of `drivetl.workflows._pillar_input`), ``rig``, ``checkpoint_sha256``
   (of every file the model came from), ``source``, ``postprocess`` (version ``drivetl.decode/2``:
   top-k, NMS IoU, most detections, and the box coding: size priors, direction classifier and its
   axis; `drivetl.workflows._onnx_decode` decodes with these alone);
5. checks the written file with onnxruntime against the plain torch graph on a generated frame and
   writes it atomically only when they agree (<= 1e-4).

Voxelization, pillar features and decoding (peaks, boxes, rotated NMS) stay outside the graph; see
docs/predict.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivetl._io import atomic_write_bytes
from drivetl.errors import CheckpointError, ConfigError
from drivetl.workflows._evaluate_load import LoadedModel, ModelSpec, load_model
from drivetl.workflows._onnx_decode import DECODE
from drivetl.workflows._onnx_graph import PillarGraph, adapter_leftovers, plain_detector
from drivetl.workflows._onnx_runner import ONNX_FORMAT
from drivetl.workflows._pillar_input import INPUTS, PREPROCESS, PillarSpec, make_pillars

__all__ = [
    "ExportResult",
    "MIN_OPSET",
    "POSTPROCESS",
    "coding_metadata",
    "export_onnx",
    "file_sha256",
    "pillar_spec",
]

#: decoding outside the graph (`drivetl.workflows._onnx_decode`, the maths of `drivetl.models.decode`
#: with its default parameters); the box coding is added per model
POSTPROCESS = {
    "version": DECODE,
    "scores": "sigmoid(heatmap)",
    "peaks": "3x3 max-pool local maxima of the scores",
    "top_k": 200,
    "nms": "per class, greedy, bird's-eye rotated IoU",
    "nms_iou": 0.2,
    "max_detections": 100,
}
#: lowest opset with ScatterElements reduction="max" (the pillar max of the point-level input)
MIN_OPSET = 18
#: largest absolute difference between onnxruntime and torch accepted by the export's own check
TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """What `export_onnx` wrote: the path, its metadata, the largest check difference, what was merged."""

    path: Path
    metadata: dict[str, Any]
    max_abs_diff: float
    info: dict[str, Any] = field(default_factory=dict)


def file_sha256(paths: list[Path]) -> str:
    """sha256 over the contents of `paths`, in order (hex)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def pillar_spec(loaded: LoadedModel) -> PillarSpec:
    """The pre-processing parameters of a loaded detector (its grid and point columns)."""
    lidar = loaded.model.lidar
    return PillarSpec(
        lidar.grid.voxel_size, lidar.grid.point_range, tuple(loaded.columns), bool(lidar.pfn.use_elongation)
    )


def coding_metadata(coding: Any) -> dict[str, Any]:
    """The box coding of a head (`drivetl.models.heads.BoxCoding`) as the metadata carries it: size
    priors (K x 3 metres or None), direction classifier, its axis (radians), channel names."""
    from drivetl.models.heads import DIRECTION_AXIS

    return {**coding.to_dict(), "direction_axis": float(DIRECTION_AXIS)}


def _model_files(spec: ModelSpec, loaded: LoadedModel) -> list[Path]:
    files = [spec.path]
    base = loaded.meta.get("base")
    if loaded.kind == "adapters" and base:
        files.append(Path(base))
    return [f for f in files if f.is_file()]


def _rig(rig: Any) -> tuple[Any, torch.Tensor | None]:
    if rig is None:
        return None, None
    from drivetl.calib import load_rig
    from drivetl.calib.rig_vector import rig_vector

    if isinstance(rig, str | os.PathLike):
        p = Path(rig)
        rig = load_rig(p / "rig.yaml" if p.is_dir() else p)
    return rig, torch.from_numpy(np.asarray(rig_vector(rig), np.float32))


def _probe_frame(spec: PillarSpec, seed: int = 0) -> np.ndarray:
    """A generated frame (canonical points) over the grid: a ground plane and a few boxes of points."""
    rng = np.random.default_rng(seed)
    x0, y0, _, x1, y1, _ = spec.point_range
    ground = np.column_stack(
        [rng.uniform(x0, x1, 4000), rng.uniform(y0, y1, 4000), rng.normal(0.0, 0.03, 4000)]
    )
    blobs = [
        rng.normal([rng.uniform(x0 + 3, x1 - 3), rng.uniform(y0 + 3, y1 - 3), 0.8], [1.5, 0.7, 0.4], (300, 3))
        for _ in range(6)
    ]
    xyz = np.concatenate([ground, *blobs]).astype(np.float32)
    extra = rng.uniform(0, 1, (len(xyz), len(spec.columns) - 3)).astype(np.float32)
    return np.concatenate([xyz, extra], 1)


def _export_bytes(graph: PillarGraph, example: tuple[torch.Tensor, ...], opset: int) -> Any:
    from torch.export import Dim

    if opset < MIN_OPSET:
        raise ConfigError(
            f"--opset {opset}: the graph's pillar max is a ScatterElements with reduction='max', "
            f"which needs opset {MIN_OPSET} or later"
        )
    n, p = Dim("points", min=1), Dim("pillars", min=1)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUTS),
            output_names=["heatmap", "regression"],
            dynamic_shapes={"features": {0: n}, "pillar_index": {0: n}, "coords": {0: p}},
            optimize=True,
            verbose=False,
        )
    return program.model_proto


def export_onnx(
    model: str | ModelSpec,
    out: str | Path,
    *,
    rig: Any = None,
    opset: int = 18,
    class_map: Mapping[str, str] | None = None,
) -> ExportResult:
    """Export `model` (``CKPT`` or ``ADAPTERS@BASE``) to `out` (see the module docstring).

    rig: a rig file, a team folder (its rig.yaml) or a `SensorRig`: the rig the export is for (its
    name goes into the metadata; FiLM adapters are fixed for it; required for FiLM models)."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'drivetl[export]'") from None
    spec = ModelSpec.parse(model) if isinstance(model, str) else model
    loaded = load_model(spec, class_map)
    rig_obj, vector = _rig(rig)
    plain, info = plain_detector(loaded.model, vector)
    graph = PillarGraph(plain).eval()
    pspec = pillar_spec(loaded)
    probe = make_pillars(_probe_frame(pspec), pspec.columns, pspec)
    example = tuple(torch.from_numpy(a) for a in probe.arrays())
    proto = _export_bytes(graph, example, opset)
    initializers = [t.name for t in proto.graph.initializer]
    if any("lora" in n for n in initializers) or adapter_leftovers(plain):
        raise CheckpointError(f"{spec.path}: adapter tensors are left in the exported graph")
    geo = loaded.model.geometry
    rig_name = getattr(rig_obj, "name", None) or ",".join(loaded.meta.get("rigs") or []) or "unknown"
    files = _model_files(spec, loaded)
    meta = {
        "format": ONNX_FORMAT,
        "classes": list(loaded.classes),
        "canonical_classes": list(loaded.canonical),
        "grid": {
            **{k: v for k, v in pspec.to_dict().items() if k != "columns"},
            "bev": {
                "x_min": geo.x_min,
                "y_min": geo.y_min,
                "cell_x": geo.cell_x,
                "cell_y": geo.cell_y,
                "height": geo.height,
                "width": geo.width,
            },
        },
        "columns": list(pspec.columns),
        "preprocess": PREPROCESS,
        "postprocess": {**POSTPROCESS, "coding": coding_metadata(loaded.model.head.coding)},
        "rig": rig_name,
        "checkpoint_sha256": file_sha256(files),
        "source": loaded.source,
        "lora_merged": len(info["lora_merged"]),
        "adapters_resolved": info["adapters_resolved"],
        "batchnorm_folded": info["batchnorm_folded"],
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = f"drivetl.{key}"
        entry.value = value if isinstance(value, str) else json.dumps(value)
    data = proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(["heatmap", "regression"], probe.feeds())
    with torch.no_grad():
        want = [t.numpy() for t in graph(*example)]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True))
    if not diff <= TOLERANCE:
        raise CheckpointError(
            f"{spec.path}: the exported graph differs from the torch model by {diff:.2e} (> {TOLERANCE}); "
            "not written"
        )
    out = Path(out)
    atomic_write_bytes(out, data)
    return ExportResult(out, meta, diff, info)
