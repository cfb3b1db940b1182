"""What the detection metrics take: the evaluation settings and one frame's predictions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from drivetl.data.records import CLASSES, Boxes
from drivetl.errors import ConfigError, DataError

#: Waymo's IoU thresholds (vehicle 0.7, the others 0.5); `sign` follows Waymo's 0.5.
DEFAULT_IOU_THRESHOLDS: Mapping[str, float] = {
    "vehicle": 0.7, "pedestrian": 0.5, "cyclist": 0.5, "sign": 0.5,
}
#: Centre-distance thresholds in metres (the middle one of nuScenes' 0.5 / 1 / 2 / 4 m).
DEFAULT_DISTANCE_THRESHOLDS: Mapping[str, float] = {
    "vehicle": 2.0, "pedestrian": 2.0, "cyclist": 2.0, "sign": 2.0,
}
#: Difficulty levels, as Waymo names them; LEVEL_2 includes LEVEL_1.
LEVELS: tuple[str, ...] = ("LEVEL_1", "LEVEL_2")
#: The band that covers every range.
ALL_RANGES = "all"


def _threshold_map(value: Mapping[str, float], classes: Sequence[str], what: str) -> dict[str, float]:
    out = {str(k): float(v) for k, v in dict(value).items()}
    missing = [c for c in classes if c not in out]
    if missing:
        raise ConfigError(f"evaluation config: {what} has no threshold for {missing}; add one per class")
    return out


@dataclass(frozen=True)
class EvalConfig:
    """Settings of `DetectionEvaluator`.

    classes: classes evaluated (predictions and ground truth of other classes are ignored).
    matcher: "iou" (rotated-box IoU of type `iou_type`, "3d" or "bev") or "distance" (BEV
        distance of box centres, metres, nuScenes-like).
    iou_thresholds / distance_thresholds: per class; a match needs IoU >= threshold, or centre
        distance <= threshold.
    range_edges: increasing band edges in metres (last may be inf); band i is
        [edges[i], edges[i+1]) of the BEV range sqrt(x^2 + y^2) of a box centre from the vehicle origin.
    level1_min_points: ground truth with at least this many LiDAR points is LEVEL_1 (Waymo: > 5).
    ignore_empty_gt: ground truth with 0 points is ignored (Waymo); else it counts as LEVEL_2.
    recall_points: AP is the mean interpolated precision on this many evenly spaced recalls in
        [0, 1] (101 as COCO); 0 gives the exact area under the interpolated curve.
    """

    classes: tuple[str, ...] = CLASSES
    matcher: Literal["iou", "distance"] = "iou"
    iou_type: Literal["3d", "bev"] = "3d"
    iou_thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_IOU_THRESHOLDS))
    distance_thresholds: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_DISTANCE_THRESHOLDS)
    )
    range_edges: tuple[float, ...] = (0.0, 30.0, 50.0, math.inf)
    level1_min_points: int = 6
    ignore_empty_gt: bool = True
    recall_points: int = 101

    def __post_init__(self) -> None:
        classes = tuple(str(c) for c in self.classes)
        if not classes or len(set(classes)) != len(classes):
            raise ConfigError(f"evaluation config: classes must be distinct and non-empty, got {classes}")
        object.__setattr__(self, "classes", classes)
        if self.matcher not in ("iou", "distance"):
            raise ConfigError(f"evaluation config: matcher must be 'iou' or 'distance', got {self.matcher!r}")
        if self.iou_type not in ("3d", "bev"):
            raise ConfigError(f"evaluation config: iou_type must be '3d' or 'bev', got {self.iou_type!r}")
        iou = _threshold_map(self.iou_thresholds, classes, "iou_thresholds")
        dist = _threshold_map(self.distance_thresholds, classes, "distance_thresholds")
        if any(not 0.0 < iou[c] <= 1.0 for c in classes):
            raise ConfigError(f"evaluation config: iou_thresholds must lie in (0, 1], got {iou}")
        if any(not dist[c] > 0.0 for c in classes):
            raise ConfigError(f"evaluation config: distance_thresholds must be > 0 metres, got {dist}")
        object.__setattr__(self, "iou_thresholds", iou)
        object.__setattr__(self, "distance_thresholds", dist)
        edges = tuple(float(e) for e in self.range_edges)
        if len(edges) < 2 or edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ConfigError(
                f"evaluation config: range_edges must be >= 0 and strictly increasing, got {edges}"
            )
        object.__setattr__(self, "range_edges", edges)
        if self.recall_points == 1 or self.recall_points < 0:
            raise ConfigError(f"evaluation config: recall_points must be 0 or >= 2, got {self.recall_points}")

    def threshold(self, cls: str) -> float:
        """The match threshold of `cls`: an IoU, or a distance in metres for the distance matcher."""
        return (self.iou_thresholds if self.matcher == "iou" else self.distance_thresholds)[cls]

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names: "all", then one per range band ("0-30", "30-50", "50+")."""
        names = []
        for lo, hi in zip(self.range_edges, self.range_edges[1:], strict=False):
            names.append(f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi:g}")
        return (ALL_RANGES, *names)

    def band_limits(self) -> list[tuple[float, float]]:
        """[lo, hi) metres for each name in `bands` ("all" is [0, inf))."""
        pairs = list(zip(self.range_edges, self.range_edges[1:], strict=False))
        return [(0.0, math.inf), *pairs]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (an infinite range edge is written as null)."""
        return {
            "classes": list(self.classes),
            "matcher": self.matcher,
            "iou_type": self.iou_type,
            "iou_thresholds": dict(self.iou_thresholds),
            "distance_thresholds": dict(self.distance_thresholds),
            "range_edges": [None if math.isinf(e) else e for e in self.range_edges],
            "level1_min_points": self.level1_min_points,
            "ignore_empty_gt": self.ignore_empty_gt,
            "recall_points": self.recall_points,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalConfig:
        d = dict(data)
        if "classes" in d:
            d["classes"] = tuple(d["classes"])
        if "range_edges" in d:
            d["range_edges"] = tuple(math.inf if e is None else float(e) for e in d["range_edges"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"evaluation config: unknown keys {sorted(unknown)}")
        return cls(**d)


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass(frozen=True, eq=False)
class Detections:
    """One frame's predicted boxes.

    boxes: (P, 7) float64 `x, y, z, length, width, height, heading`, vehicle frame, metres, radians.
    scores: (P,) float64 confidence, higher is more confident.
    classes: P canonical class names; an integer array (P,) is read as indices into
        `drivetl.data.records.CLASSES`. numpy arrays and torch tensors are both accepted.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        boxes = _numpy(self.boxes).astype(np.float64).reshape(-1, 7)
        scores = _numpy(self.scores).astype(np.float64).reshape(-1)
        classes = self.classes
        if not isinstance(classes, tuple | list):
            labels = _numpy(classes).reshape(-1)
            if labels.dtype.kind in "iu":
                if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
                    raise DataError(f"detections: class index out of range 0..{len(CLASSES) - 1}")
                classes = tuple(CLASSES[int(i)] for i in labels)
            else:
                classes = tuple(str(c) for c in labels)
        classes = tuple(str(c) for c in classes)
        if not boxes.shape[0] == scores.shape[0] == len(classes):
            raise DataError(
                f"detections: {boxes.shape[0]} boxes, {scores.shape[0]} scores and {len(classes)} classes; "
                "give one score and one class per box"
            )
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise DataError("detections: boxes or scores contain NaN/inf; filter them before evaluation")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "classes", classes)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 7)), np.zeros(0), ())

    @staticmethod
    def from_boxes(boxes: Boxes, scores: Any) -> Detections:
        """Detections from a `Boxes` (its boxes and classes) and (P,) scores."""
        return Detections(boxes.boxes, scores, boxes.classes)
