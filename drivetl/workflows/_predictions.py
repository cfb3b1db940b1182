"""Prediction files: one JSON per frame in the team format's label schema, and reading them back.

Layout of a `drivetl predict` output folder::

    predict.json                              the manifest: format, model (name, source, sha256,
                                              classes, detection range), data, score threshold,
                                              and once the run completes, frames and frames/s
    frames/<segment>/<timestamp_us>.json      one file per frame (below)
    renders/                                  bird's-eye and camera views of a few frames
    report.html                               a self-contained page of the renders

A frame file is a team frame file without sensor entries: ``segment``, ``timestamp_us`` and
``labels`` with ``frame: vehicle`` and ``objects`` exactly as docs/team_format.md describes them
(``class``, ``center``, ``size``, ``heading``, ``id``), plus ``score`` per object and the frame's
``ground_z`` (the z of the ground canonicalization subtracted). Boxes are in the recording's vehicle
frame, like labels, so the files can be reviewed, copied into a team folder as pseudo-labels, or
scored by ``drivetl evaluate --predictions DIR``, which canonicalizes them exactly as it does labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivetl._io import atomic_write_text
from drivetl.data.records import CLASSES, FrameKey
from drivetl.errors import DataError

FORMAT = "drivetl.predictions/1"
MANIFEST = "predict.json"

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PredictionFiles",
    "frame_document",
    "frame_path",
    "read_frame",
    "read_manifest",
    "write_frame",
]


def frame_path(out: Path, key: FrameKey) -> Path:
    """Where frame `key`'s predictions live in the folder `out`."""
    return out / "frames" / key.segment / f"{int(key.timestamp_us)}.json"


def frame_document(
    key: FrameKey,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    ground_z: float,
) -> dict[str, Any]:
    """The frame file of one frame. boxes: (D, 7) canonical frame (ground at z = 0), metres/radians;
    scores: (D,); classes: D class names. Box z goes back to the vehicle frame (+ ground_z)."""
    objects = []
    for i in range(len(boxes)):
        b = np.asarray(boxes[i], dtype=np.float64)
        objects.append(
            {
                "class": str(classes[i]),
                "id": f"det{i}",
                "center": [float(b[0]), float(b[1]), float(b[2]) + float(ground_z)],
                "size": [float(b[3]), float(b[4]), float(b[5])],
                "heading": float(b[6]),
                "score": float(scores[i]),
            }
        )
    return {
        "format": FORMAT,
        "segment": key.segment,
        "timestamp_us": int(key.timestamp_us),
        "ground_z": float(ground_z),
        "labels": {"frame": "vehicle", "objects": objects},
    }


def write_frame(out: Path, doc: Mapping[str, Any]) -> Path:
    """Write one frame file atomically (a resumed run never finds half a file); returns its path."""
    path = frame_path(out, FrameKey(doc["segment"], int(doc["timestamp_us"])))
    atomic_write_text(path, json.dumps(doc, allow_nan=False) + "\n")
    return path


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of a prediction folder, None when it has none; DataError when it is not one."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable prediction manifest ({exc}); delete it to start over") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: not a drivetl prediction manifest (format {FORMAT!r})")
    return doc


def read_frame(
    path: Path, classes: Sequence[str] = CLASSES
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(boxes (D, 7) vehicle frame, scores (D,), class names) of a frame file; objects whose class is
    not in `classes` are left out. DataError naming the file and object for a malformed entry."""
    try:
        doc = json.loads(path.read_text())
        objects = doc["labels"]["objects"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not a prediction file ({type(exc).__name__}: {str(exc)[:80]}); rerun drivetl predict"
        ) from None
    rows, scores, names = [], [], []
    for i, obj in enumerate(objects):
        try:
            if obj["class"] not in classes:
                continue
            row = [*map(float, obj["center"]), *map(float, obj["size"]), float(obj["heading"])]
            score = float(obj["score"])
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(
                f"{path}: labels.objects[{i}] needs class, center, size, heading and score ({exc})"
            ) from None
        if len(row) != 7 or not all(math.isfinite(v) for v in [*row, score]):
            raise DataError(
                f"{path}: labels.objects[{i}]: center/size/heading/score must be 7 finite numbers"
            )
        rows.append(row)
        scores.append(score)
        names.append(str(obj["class"]))
    boxes = np.asarray(rows, np.float64).reshape(-1, 7)
    return boxes, np.asarray(scores, np.float64), tuple(names)


@dataclass
class PredictionFiles:
    """A `drivetl predict` output folder as a model to evaluate (``drivetl evaluate --predictions``).

    It plays a loaded model's part in the evaluation: a name, its classes and detection range (from
    the manifest); `run` reads each frame's file instead of running a network."""

    root: Path
    name: str
    manifest: dict[str, Any]
    kind: str = "predictions"
    notes: list[str] = field(default_factory=list)
    model: Any = None
    camera_names: tuple[str, ...] | None = None
    film: bool = False

    @staticmethod
    def open(root: str | Path, name: str | None = None) -> PredictionFiles:
        """Open a prediction folder; DataError naming it when it has no manifest."""
        root = Path(root)
        doc = read_manifest(root)
        if doc is None:
            raise DataError(f"{root}: no {MANIFEST}; pass a folder written by `drivetl predict --out`")
        return PredictionFiles(root, name or root.name, doc)

    @property
    def source(self) -> str:
        """Where the predictions came from (the folder, and the model that wrote them)."""
        return f"{self.root} ({self.manifest.get('model', {}).get('source', '?')})"

    @property
    def has_camera(self) -> bool:
        """Prediction files need no camera input."""
        return False

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names the files use."""
        return tuple(self.manifest["model"]["classes"])

    @property
    def canonical(self) -> tuple[str | None, ...]:
        """Canonical class of each file class (the files hold canonical names where one exists)."""
        return tuple(c if c in CLASSES else None for c in self.classes)

    @property
    def columns(self) -> tuple[str, ...]:
        """The point columns of the model that wrote the files."""
        return tuple(self.manifest["model"].get("columns") or ())

    @property
    def point_range(self) -> tuple[float, ...]:
        """(x_min, y_min, z_min, x_max, y_max, z_max) metres: the writing model's detection range."""
        return tuple(float(v) for v in self.manifest["model"]["point_range"])

    def run(self, data, progress: Callable[[int], None] | None = None, skip_corrupt: bool = False):
        """A `ModelRun` of the files over the frames of `data` (ground truth canonicalized from the data,
        predicted boxes moved into the same canonical frame). DataError naming a missing frame file;
        a data frame that cannot be read stops with a DataError naming it, or with `skip_corrupt` is
        left out and listed in `ModelRun.skipped`."""
        import time

        from drivetl.data.canonicalize import canonicalize
        from drivetl.errors import DrivetlError, one_line
        from drivetl.eval import Detections
        from drivetl.workflows._eval_frames import SKIP_HINT, SkippedFrame, frame_label
        from drivetl.workflows._evaluate_run import FramePrediction, ModelRun

        t0 = time.perf_counter()
        run = ModelRun()
        for pos, i in enumerate(data.indices):
            try:
                sample = canonicalize(data.source[i], decode_images=False)
            except DrivetlError as exc:
                label, reason = frame_label(data, pos), one_line(exc)
                if not skip_corrupt:
                    raise DataError(f"{reason} (frame {label}); {SKIP_HINT}") from None
                run.skipped.append(SkippedFrame(pos, label, reason))
                if progress is not None:
                    progress(1)
                continue
            path = frame_path(self.root, sample.key)
            if not path.is_file():
                raise DataError(
                    f"{path}: no predictions for frame {sample.key}; run drivetl predict on the same "
                    "data (it resumes) or evaluate the frames it covered"
                )
            boxes, scores, names = read_frame(path)
            boxes[:, 2] -= sample.ground_z
            run.frames.append(FramePrediction(sample.key, sample.boxes, Detections(boxes, scores, names)))
            run.positions.append(pos)
            if progress is not None:
                progress(1)
        run.seconds = time.perf_counter() - t0
        return run
