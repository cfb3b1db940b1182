"""Running an exported detector with onnxruntime and numpy only: pre-processing, the session, decoding.

``OnnxDetector("model.onnx")`` reads the metadata `drivetl.workflows.export_onnx` wrote (classes,
grid, point columns, pre-processing and post-processing versions, box coding) and opens a CPU
session. For one frame's canonical points:

- ``maps(points, columns)``: heatmap logits and regression (numpy), through the pre-processing
  `drivetl.workflows._pillar_input.make_pillars`;
- ``detect(points, columns, score_threshold)``: the boxes, decoded by
  `drivetl.workflows._onnx_decode.decode_maps` (peaks, box coding, per-class rotated NMS), the same
  maths as the torch decode.

Neither this module nor what it imports loads torch (tests/workflows/test_onnx_decode.py checks it
in a fresh interpreter that cannot import torch); onnx and onnxruntime are imported when used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drivetl.errors import CheckpointError, ConfigError
from drivetl.workflows._onnx_decode import NumpyDetections, Postprocess, decode_maps
from drivetl.workflows._pillar_input import PREPROCESS, PillarSpec, make_pillars

ONNX_FORMAT = "drivetl.onnx/1"

__all__ = ["ONNX_FORMAT", "OnnxDetector", "read_onnx_metadata"]


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The drivetl metadata of an exported file (JSON values decoded); CheckpointError if it has none."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError(
            "reading ONNX files needs the onnx package: pip install 'drivetl[export]'"
        ) from None
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX file not found (write one with `drivetl export onnx`)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise CheckpointError(f"{path}: not an ONNX model ({str(exc)[:80]})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("drivetl.format") != ONNX_FORMAT:
        raise CheckpointError(
            f"{path}: no drivetl metadata (drivetl.format {ONNX_FORMAT!r}); "
            "export it with `drivetl export onnx`"
        )
    out: dict[str, Any] = {}
    for key, value in props.items():
        name = key.removeprefix("drivetl.")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    if out.get("preprocess") != PREPROCESS:
        raise CheckpointError(
            f"{path}: pre-processing {str(out.get('preprocess'))[:40]!r}; this drivetl implements "
            f"{PREPROCESS} (export the model again with `drivetl export onnx`)"
        )
    return out


class OnnxDetector:
    """An exported detector in an onnxruntime CPU session (see the module docstring)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError(
                "running ONNX models needs onnxruntime: pip install 'drivetl[export]'"
            ) from None
        self.path = Path(path)
        self.meta = read_onnx_metadata(self.path)
        try:
            self.spec = PillarSpec.from_dict({**self.meta["grid"], "columns": self.meta["columns"]})
            bev = self.meta["grid"]["bev"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: grid metadata is incomplete ({type(exc).__name__}: {str(exc)[:60]}); "
                "export the model again with `drivetl export onnx`"
            ) from None
        self.post = Postprocess.from_dict(self.meta.get("postprocess") or {}, bev, str(self.path))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    @property
    def classes(self) -> tuple[str, ...]:
        """Head classes, in channel order."""
        return tuple(self.meta["classes"])

    @property
    def columns(self) -> tuple[str, ...]:
        """Point columns the model takes."""
        return self.spec.columns

    @property
    def geometry(self) -> dict[str, float]:
        """The output maps' BEV geometry: x_min, y_min, cell_x, cell_y (metres), height, width (cells)."""
        return dict(self.meta["grid"]["bev"])

    def maps(self, points: np.ndarray, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Heatmap logits (1, K, H, W) and regression (1, C, H, W) of one frame's canonical points (N, C)."""
        feeds = make_pillars(points, columns, self.spec).feeds()
        heat, reg = self.session.run(["heatmap", "regression"], feeds)
        return heat, reg

    def detect(self, points: np.ndarray, columns: Sequence[str], score_threshold: float) -> NumpyDetections:
        """The boxes of one frame's canonical points (N, C): canonical vehicle frame, best first."""
        heat, reg = self.maps(points, columns)
        return decode_maps(heat, reg, self.post, score_threshold)[0]
