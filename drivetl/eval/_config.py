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
#: Score cutoffs of the official Waymo metrics configuration: 0.00, 0.01, ..., 1.00.
DEFAULT_SCORE_CUTOFFS: tuple[float, ...] = tuple(round(i * 0.01, 2) for i in range(101))


_CHOICES: Mapping[str, tuple[str, ...]] = {
    "matching": ("score_first", "hungarian"),
    "range_type": ("bev", "3d"),
    "empty_gt": ("ignore", "drop", "level_2"),
    "harder_matches": ("ignore", "true_positive"),
    "ap_integration": ("recall_grid", "score_cutoffs"),
}


def _threshold_map(value: Mapping[str, float], classes: Sequence[str], what: str) -> dict[str, float]:
    out = {str(k): float(v) for k, v in dict(value).items()}
    missing = [c for c in classes if c not in out]
    if missing:
        raise ConfigError(f"evaluation config: {what} has no threshold for {missing}; add one per class")
    return out


@dataclass(frozen=True)
class EvalConfig:
    """Settings of `DetectionEvaluator` (docs/evaluate.md explains each choice).

    classes: classes evaluated (predictions and ground truth of other classes are ignored).
    matcher: "iou" (rotated-box IoU of type `iou_type`, "3d" or "bev") or "distance" (BEV
        distance of box centres, metres, nuScenes-like).
    iou_thresholds / distance_thresholds: per class; a match needs IoU >= threshold, or centre
        distance <= threshold.
    matching: "score_first" (predictions by descending score each take the free ground truth they
        overlap most; COCO's, Waymo's TYPE_SCORE_FIRST) or "hungarian" (Waymo's default: at each
        score threshold, the assignment of that threshold's predictions that maximizes the summed
        IoU of pairs above the class threshold).
    range_edges: increasing band edges in metres (last may be inf); band i is
        [edges[i], edges[i+1]) of the range of a box centre from the vehicle origin, measured as
        `range_type`: "bev" sqrt(x^2 + y^2) or "3d" sqrt(x^2 + y^2 + z^2) (Waymo's RANGE breakdown).
    level1_min_points: ground truth with at least this many LiDAR points is LEVEL_1 (Waymo: > 5).
    empty_gt: ground truth with 0 points is "ignore"d (a prediction matched to it is neither a true
        nor a false positive), "drop"ped before matching (Waymo's evaluation tool: a prediction on
        it is a false positive), or counted as "level_2".
    harder_matches: at LEVEL_1, what a prediction matched to LEVEL_2 ground truth counts as:
        "ignore" (neither true nor false positive) or "true_positive" (Waymo's op; the unmatched
        LEVEL_2 box is still no false negative).
    ap_integration: "recall_grid": AP is the mean interpolated precision on `recall_points` evenly
        spaced recalls in [0, 1] (101 as COCO; 0 gives the exact area under the interpolated
        curve), with curve points at every distinct score; "score_cutoffs": Waymo's op, precision
        and recall at each of `score_cutoffs` (compared in float32 as the op does) and the
        max-precision-to-the-right curve integrated by trapezoids, with points added every
        `recall_delta` across wider recall gaps.
    """

    classes: tuple[str, ...] = CLASSES
    matcher: Literal["iou", "distance"] = "iou"
    iou_type: Literal["3d", "bev"] = "3d"
    iou_thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_IOU_THRESHOLDS))
    distance_thresholds: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_DISTANCE_THRESHOLDS)
    )
    matching: Literal["score_first", "hungarian"] = "score_first"
    range_edges: tuple[float, ...] = (0.0, 30.0, 50.0, math.inf)
    range_type: Literal["bev", "3d"] = "bev"
    level1_min_points: int = 6
    empty_gt: Literal["ignore", "drop", "level_2"] = "ignore"
    harder_matches: Literal["ignore", "true_positive"] = "ignore"
    ap_integration: Literal["recall_grid", "score_cutoffs"] = "recall_grid"
    recall_points: int = 101
    score_cutoffs: tuple[float, ...] = DEFAULT_SCORE_CUTOFFS
    recall_delta: float = 0.05

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
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"evaluation config: {name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        cutoffs = tuple(float(c) for c in self.score_cutoffs)
        if not cutoffs or any(b <= a for a, b in zip(cutoffs, cutoffs[1:], strict=False)):
            raise ConfigError(
                "evaluation config: score_cutoffs must be non-empty and strictly increasing, "
                f"got {cutoffs[:5]}..."
            )
        object.__setattr__(self, "score_cutoffs", cutoffs)
        if not 0.0 < float(self.recall_delta) <= 1.0:
            raise ConfigError(f"evaluation config: recall_delta must lie in (0, 1], got {self.recall_delta}")
        object.__setattr__(self, "recall_delta", float(self.recall_delta))

    @classmethod
    def waymo(cls, **overrides: Any) -> EvalConfig:
        """The choices of Waymo's official detection metrics (its op and evaluation tool).

        3D IoU at 0.7 / 0.5, Hungarian matching per score cutoff, cutoffs 0.00..1.00 with the op's
        integration, 3D range bands [0, 30), [30, 50), [50, inf), LEVEL_2 matches counted as true
        positives at LEVEL_1, ground truth without points dropped. `overrides` replace any field.
        """
        settings: dict[str, Any] = {
            "matcher": "iou", "iou_type": "3d", "iou_thresholds": dict(DEFAULT_IOU_THRESHOLDS),
            "matching": "hungarian", "range_edges": (0.0, 30.0, 50.0, math.inf), "range_type": "3d",
            "level1_min_points": 6, "empty_gt": "drop", "harder_matches": "true_positive",
            "ap_integration": "score_cutoffs", "score_cutoffs": DEFAULT_SCORE_CUTOFFS, "recall_delta": 0.05,
        }
        settings.update(overrides)
        return cls(**settings)

    def describe(self) -> str:
        """One line naming the matching, the AP integration and what APH weights (for reports)."""
        matching = {
            "score_first": "score-first greedy matching",
            "hungarian": "Hungarian matching per score threshold",
        }[self.matching]
        if self.ap_integration == "recall_grid":
            ap = (
                f"AP = mean interpolated precision at {self.recall_points} recalls"
                if self.recall_points
                else "AP = area under the interpolated curve"
            )
        else:
            ap = (
                f"AP integrated over {len(self.score_cutoffs)} score cutoffs "
                f"(Waymo's op, recall step {self.recall_delta:g})"
            )
        empty = {"ignore": "ignored", "drop": "dropped", "level_2": "LEVEL_2"}[self.empty_gt]
        harder = {"ignore": "ignored", "true_positive": "true positives"}[self.harder_matches]
        return (
            f"{matching}; {ap}; APH weights the precision by heading accuracy; {self.range_type.upper()} "
            f"ranges; boxes without points {empty}; LEVEL_2 matches at LEVEL_1 {harder}"
        )

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

    def box_range(self, boxes: np.ndarray) -> np.ndarray:
        """Range of box centres from the vehicle origin: (M, 7) boxes -> (M,) float64 metres,
        sqrt(x^2 + y^2) or, for `range_type` "3d", sqrt(x^2 + y^2 + z^2)."""
        centres = np.asarray(boxes, np.float64).reshape(-1, 7)[:, :3]
        if self.range_type == "3d":
            return np.sqrt((centres**2).sum(axis=1))
        return np.hypot(centres[:, 0], centres[:, 1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (an infinite range edge is written as null)."""
        return {
            "classes": list(self.classes),
            "matcher": self.matcher,
            "iou_type": self.iou_type,
            "iou_thresholds": dict(self.iou_thresholds),
            "distance_thresholds": dict(self.distance_thresholds),
            "range_edges": [None if math.isinf(e) else e for e in self.range_edges],
            "range_type": self.range_type,
            "level1_min_points": self.level1_min_points,
            "empty_gt": self.empty_gt,
            "harder_matches": self.harder_matches,
            "matching": self.matching,
            "ap_integration": self.ap_integration,
            "recall_points": self.recall_points,
            "score_cutoffs": list(self.score_cutoffs),
            "recall_delta": self.recall_delta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalConfig:
        """Inverse of `to_dict`; files written before `empty_gt` existed give `ignore_empty_gt`."""
        d = dict(data)
        if "ignore_empty_gt" in d and "empty_gt" not in d:
            d["empty_gt"] = "ignore" if d.pop("ignore_empty_gt") else "level_2"
        if "score_cutoffs" in d:
            d["score_cutoffs"] = tuple(d["score_cutoffs"])
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


def in_region(boxes: np.ndarray, region: Sequence[float] | None) -> np.ndarray:
    """(M,) bool: box centres (M, >= 2) inside the BEV rectangle (x_min, y_min, x_max, y_max), metres
    (the evaluation's default region is a model's detection range); all True when `region` is None."""
    if region is None:
        return np.ones(len(boxes), bool)
    x0, y0, x1, y1 = region
    return (boxes[:, 0] >= x0) & (boxes[:, 0] < x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] < y1)
