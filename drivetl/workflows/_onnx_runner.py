"""Running an exported detector with onnxruntime: pre-processing, the session, the file's metadata.

``OnnxDetector("model.onnx")`` reads the metadata `drivetl.workflows.export_onnx` wrote (classes,
grid, point columns, pre-processing version), opens a CPU session, and ``maps(points, columns)``
returns the heatmap logits and regression of one frame (numpy) from its canonical points, through
`drivetl.workflows._pillar_input.make_pillars`. The network runs without torch; decoding and NMS are
the documented post-processing (`drivetl.models.decode`), applied by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drivetl.errors import CheckpointError, ConfigError
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
            f"{path}: pre-processing {out.get('preprocess')!r}; this drivetl implements {PREPROCESS}"
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
        self.spec = PillarSpec.from_dict({**self.meta["grid"], "columns": self.meta["columns"]})
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
