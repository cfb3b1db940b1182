"""Box-error metrics: *why* an AP at a tight IoU threshold is low.

For predictions matched to ground truth by BEV centre distance (nuScenes' true-positive metrics,
with Waymo's box convention), per class:

- translation error: BEV distance of the centres (metres) and, apart, the absolute z difference
  (metres), since a detector can seat a box well in BEV and badly in height;
- scale error: 1 - 3D IoU of the two boxes after aligning their centres and headings, so only the
  sizes differ (nuScenes' ASE): ``1 - prod(min(d_p, d_g)) / (vol_p + vol_g - prod(min(d_p, d_g)))``;
- orientation error: the smallest yaw difference in radians, in [0, pi] (nuScenes' AOE). A box
  turned by 180 degrees has error pi: for vehicles, pedestrians and cyclists the front matters, as
  for Waymo's APH, which weighs such a match 0. How many matches are such flips is reported
  apart (`BoxErrors.flip_share`: error > 3 pi / 4), with the error modulo pi (`axis_error`), so a
  reader can tell a detector that finds the box's axis but not its front from one that misses both.

Matching is score-first greedy (as `DetectionEvaluator`'s): predictions by descending score each take
the nearest unmatched ground truth of their class within the distance threshold, so each object is
described by the most confident prediction near it. Ground truth without LiDAR points
(``num_points == 0``) is left out, as in the AP evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivetl.data.records import Boxes
from drivetl.eval._config import Detections
from drivetl.eval._iou import iou_3d
from drivetl.eval._matching import TRUE_POSITIVE, centre_distance, greedy_match

__all__ = [
    "FLIP_THRESHOLD",
    "TruePositiveErrors",
    "BoxErrorAccumulator",
    "BoxErrors",
    "aligned_scale_error",
    "heading_error_histogram",
    "match_by_distance",
    "orientation_error",
]

#: an orientation error above this (radians) counts as a flip (front and back swapped)
FLIP_THRESHOLD = 0.75 * math.pi


def orientation_error(
    pred_heading: np.ndarray, gt_heading: np.ndarray, period: float = 2 * math.pi
) -> np.ndarray:
    """Smallest yaw difference, radians: in [0, period / 2]; shapes broadcast, float64.

    period 2 pi (default): a box turned by 180 degrees has error pi. period pi: front and back are
    the same (error in [0, pi / 2]: the error of the box's axis).
    """
    d = np.abs(np.asarray(pred_heading, np.float64) - np.asarray(gt_heading, np.float64)) % period
    return np.minimum(d, period - d)


def aligned_scale_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """1 - IoU of pairs of boxes with centres and headings aligned: (K, 7), (K, 7) -> (K,) in [0, 1].

    Only the sizes (length, width, height, metres) enter: nuScenes' ASE.
    """
    p = np.asarray(pred, np.float64).reshape(-1, 7)[:, 3:6]
    g = np.asarray(gt, np.float64).reshape(-1, 7)[:, 3:6]
    inter = np.prod(np.minimum(p, g), axis=1)
    union = np.prod(p, axis=1) + np.prod(g, axis=1) - inter
    return 1.0 - np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_by_distance(
    pred_boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Score-first greedy matching by BEV centre distance (metres).

    pred_boxes (P, 7), scores (P,), gt_boxes (G, 7), vehicle frame. Returns (pred index, gt index),
    two (K,) int64 arrays of the matched pairs, in descending prediction score.
    """
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 7)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 7)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    status, matched = greedy_match(-centre_distance(pred_boxes[order], gt_boxes), -float(threshold))
    hit = status == TRUE_POSITIVE
    return order[hit].astype(np.int64), matched[hit].astype(np.int64)


@dataclass(frozen=True, eq=False)
class BoxErrors:
    """Errors of the matched pairs of one class; every array is (K,) float64, one entry per pair.

    translation_bev / translation_z: metres. scale: 1 - aligned IoU. orientation: radians in
    [0, pi]. iou_3d / iou_bev: the pair's plain IoUs (what the AP thresholds see). num_gt:
    ground truth that counts (with points); num_pred: predictions of the class considered.
    """

    cls: str
    num_gt: int
    num_pred: int
    translation_bev: np.ndarray = field(default_factory=lambda: np.zeros(0))
    translation_z: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    orientation: np.ndarray = field(default_factory=lambda: np.zeros(0))
    iou_3d: np.ndarray = field(default_factory=lambda: np.zeros(0))
    length_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def num_matched(self) -> int:
        return int(self.orientation.size)

    @property
    def axis_error(self) -> np.ndarray:
        """Orientation error modulo pi (front/back swaps forgiven), radians in [0, pi / 2]."""
        return np.minimum(self.orientation, math.pi - self.orientation)

    @property
    def flip_share(self) -> float:
        """Share of matches whose heading is off by more than `FLIP_THRESHOLD` (NaN without matches)."""
        return float(np.mean(self.orientation > FLIP_THRESHOLD)) if self.num_matched else math.nan

    def summary(self) -> dict[str, float | int]:
        """Medians and means of every error, flip share, matched share; NaN where nothing matched."""
        out: dict[str, float | int] = {
            "num_gt": self.num_gt,
            "num_pred": self.num_pred,
            "num_matched": self.num_matched,
        }
        named = {
            "translation_bev": self.translation_bev,
            "translation_z": self.translation_z,
            "scale": self.scale,
            "orientation": self.orientation,
            "axis": self.axis_error,
            "iou_3d": self.iou_3d,
            "length_ratio": self.length_ratio,
        }
        for name, values in named.items():
            out[f"{name}_median"] = float(np.median(values)) if values.size else math.nan
            out[f"{name}_mean"] = float(np.mean(values)) if values.size else math.nan
        out["flip_share"] = self.flip_share
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN written as None)."""
        out: dict[str, Any] = {"class": self.cls}
        for k, v in self.summary().items():
            if isinstance(v, float):
                v = None if math.isnan(v) else round(v, 6)
            out[k] = v
        return out


def heading_error_histogram(errors: np.ndarray, bins: int = 18) -> tuple[np.ndarray, np.ndarray]:
    """Counts of orientation errors (radians, [0, pi]) in `bins` equal bins over [0, pi].

    Returns (counts (bins,) int64, edges (bins + 1,) float64 radians); an error of exactly pi falls
    in the last bin.
    """
    counts, edges = np.histogram(np.asarray(errors, np.float64), bins=bins, range=(0.0, math.pi))
    return counts.astype(np.int64), edges


class BoxErrorAccumulator:
    """Accumulate matched pairs over frames; `compute()` gives one `BoxErrors` per class.

    classes: classes measured. distance: match threshold, metres (BEV centre distance; one value for
    every class, or a class -> metres mapping). min_score: predictions under it are left out.
    """

    def __init__(
        self,
        classes: Sequence[str],
        distance: float | Mapping[str, float] = 2.0,
        min_score: float = 0.0,
    ) -> None:
        self.classes = tuple(classes)
        if isinstance(distance, Mapping):
            self.distance = {c: float(distance[c]) for c in self.classes}
        else:
            self.distance = {c: float(distance) for c in self.classes}
        self.min_score = float(min_score)
        self._pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in self.classes}
        self._num_gt = dict.fromkeys(self.classes, 0)
        self._num_pred = dict.fromkeys(self.classes, 0)

    def update(self, predictions: Detections, ground_truth: Boxes) -> None:
        """Add one frame: its `Detections` and its `Boxes` (vehicle frame)."""
        pred_cls = np.asarray(predictions.classes, object)
        gt_cls = np.asarray(ground_truth.classes, object)
        counted = ground_truth.num_points != 0
        for cls in self.classes:
            pm = np.zeros(0, np.int64)
            if len(predictions):
                pm = np.flatnonzero((pred_cls == cls) & (predictions.scores >= self.min_score))
            gm = np.flatnonzero((gt_cls == cls) & counted) if len(ground_truth) else np.zeros(0, np.int64)
            self._num_gt[cls] += int(gm.size)
            self._num_pred[cls] += int(pm.size)
            if pm.size == 0 or gm.size == 0:
                continue
            pi, gi = match_by_distance(
                predictions.boxes[pm], predictions.scores[pm], ground_truth.boxes[gm], self.distance[cls]
            )
            self._pairs[cls].append((predictions.boxes[pm][pi], ground_truth.boxes[gm][gi]))

    def compute(self) -> dict[str, BoxErrors]:
        """{class: BoxErrors} over every frame so far."""
        out = {}
        for cls in self.classes:
            pairs = self._pairs[cls]
            if not pairs:
                out[cls] = BoxErrors(cls, self._num_gt[cls], self._num_pred[cls])
                continue
            p = np.concatenate([a for a, _ in pairs])
            g = np.concatenate([b for _, b in pairs])
            iou = np.array([iou_3d(p[i : i + 1], g[i : i + 1])[0, 0] for i in range(len(p))])
            out[cls] = BoxErrors(
                cls,
                self._num_gt[cls],
                self._num_pred[cls],
                translation_bev=np.hypot(p[:, 0] - g[:, 0], p[:, 1] - g[:, 1]),
                translation_z=np.abs(p[:, 2] - g[:, 2]),
                scale=aligned_scale_error(p, g),
                orientation=orientation_error(p[:, 6], g[:, 6]),
                iou_3d=iou,
                length_ratio=p[:, 3] / np.maximum(g[:, 3], 1e-9),
            )
        return out


class TruePositiveErrors:
    """Mean errors of the true positives under IoU matching (the HTML report's summary row).

    `update(pred, scores, gt, iou_type, threshold)` per frame and class: predictions matched
    score-first to ground truth at `threshold`; `compute()` gives ``matched`` (count), ``centre_m``
    (3D centre distance, metres), ``size_pct`` (mean |predicted - true| / true over length, width,
    height, percent) and ``heading_deg`` (wrapped absolute heading difference, degrees; a flip is
    180); NaN errors when nothing matched.
    """

    def __init__(self) -> None:
        self.centre: list[float] = []
        self.size: list[float] = []
        self.heading: list[float] = []

    def update(
        self, pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou_type: str, threshold: float
    ) -> None:
        """Add one frame's (and class's) predictions (M, 7) with scores (M,) against gt (G, 7)."""
        from drivetl.eval._iou import box_iou

        if not len(gt) or not len(pred):
            return
        p = pred[np.argsort(-scores, kind="stable")]
        status, matched = greedy_match(box_iou(p, gt, iou_type), threshold)
        for i in np.flatnonzero(status == TRUE_POSITIVE):
            a, b = p[i], gt[matched[i]]
            self.centre.append(float(np.linalg.norm(a[:3] - b[:3])))
            self.size.append(float(np.mean(np.abs(a[3:6] - b[3:6]) / b[3:6])) * 100)
            d = abs(a[6] - b[6]) % (2 * np.pi)
            self.heading.append(float(np.degrees(min(d, 2 * np.pi - d))))

    def compute(self) -> dict[str, float]:
        """The means (see the class docstring)."""

        def mean(v: list[float]) -> float:
            return float(np.mean(v)) if v else float("nan")

        return {"matched": len(self.centre), "centre_m": mean(self.centre), "size_pct": mean(self.size),
                "heading_deg": mean(self.heading)}
