"""Precision/recall curves and average precision from matched predictions.

Curve points are taken at each distinct score threshold (predictions with equal scores enter
together, so the result does not depend on the order frames were seen in). AP is the area under
the *interpolated* curve, where the precision at recall r is the highest precision reached at any
recall >= r (the monotone envelope used by PASCAL VOC, COCO and Waymo's metrics):

- `recall_points = K >= 2`: AP = mean of the interpolated precision at K evenly spaced recalls
  0, 1/(K-1), ..., 1 (K = 101 as in COCO; a recall never reached contributes 0);
- `recall_points = 0`: the exact area under the interpolated (step) curve.

APH uses the same construction with each true positive counted with its heading accuracy w in
[0, 1] instead of 1: precision_h = sum(w) / (TP + FP), recall_h = sum(w) / num_gt (Waymo's APH).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class PRCurve:
    """A precision/recall curve, one point per distinct score threshold (descending scores).

    recall, precision: (K,) float64 for AP; heading_recall, heading_precision: (K,) float64 for
    APH; scores: (K,) float64 thresholds (NaN where unknown, e.g. a curve read back from JSON).
    """

    recall: np.ndarray
    precision: np.ndarray
    heading_recall: np.ndarray
    heading_precision: np.ndarray
    scores: np.ndarray

    def interpolated(self, recall_grid: np.ndarray, heading: bool = False) -> np.ndarray:
        """Interpolated precision (max precision at recall >= r) at each r of recall_grid -> (R,)."""
        recall = self.heading_recall if heading else self.recall
        precision = self.heading_precision if heading else self.precision
        return _interpolate(recall, precision, np.asarray(recall_grid, np.float64))


def _envelope(precision: np.ndarray) -> np.ndarray:
    """Running maximum from the right: envelope[i] = max(precision[i:])."""
    return np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision


def _interpolate(recall: np.ndarray, precision: np.ndarray, grid: np.ndarray) -> np.ndarray:
    if recall.size == 0:
        return np.zeros_like(grid)
    # Recall is non-decreasing along the curve; sort defensively (stable) to be safe.
    order = np.argsort(recall, kind="stable")
    r, env = recall[order], _envelope(precision[order])
    idx = np.searchsorted(r, grid - 1e-12, side="left")
    return np.where(idx < r.size, env[np.minimum(idx, r.size - 1)], 0.0)


def pr_curve(scores: np.ndarray, true_positive: np.ndarray, weight: np.ndarray, num_gt: int) -> PRCurve:
    """The curve of one class/breakdown.

    scores: (P,) float, tp: (P,) bool, weight: (P,) float heading accuracy of each true positive
    (ignored for false positives); num_gt: ground-truth boxes that count (> 0 for a defined recall).
    """
    scores = np.asarray(scores, np.float64)
    tp = np.asarray(true_positive, bool)
    w = np.where(tp, np.asarray(weight, np.float64), 0.0)
    order = np.argsort(-scores, kind="stable")
    s, tp, w = scores[order], tp[order], w[order]
    cum_tp, cum_h = np.cumsum(tp), np.cumsum(w)
    cum_n = np.arange(1, s.size + 1)
    # One point per distinct score: the last index of each group of equal scores.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.zeros(0, np.int64)
    tps, hs, ns = cum_tp[last].astype(np.float64), cum_h[last], cum_n[last].astype(np.float64)
    denom = max(num_gt, 1)
    return PRCurve(
        recall=tps / denom if num_gt > 0 else np.full(last.size, np.nan),
        precision=tps / ns,
        heading_recall=hs / denom if num_gt > 0 else np.full(last.size, np.nan),
        heading_precision=hs / ns,
        scores=s[last],
    )


def average_precision(curve: PRCurve, num_gt: int, recall_points: int = 101, heading: bool = False) -> float:
    """AP (or APH with heading=True) of a curve; NaN when there is no ground truth to recall."""
    if num_gt <= 0:
        return float("nan")
    recall = curve.heading_recall if heading else curve.recall
    precision = curve.heading_precision if heading else curve.precision
    if recall.size == 0:
        return 0.0
    if recall_points >= 2:
        grid = np.linspace(0.0, 1.0, recall_points)
        return float(_interpolate(recall, precision, grid).mean())
    order = np.argsort(recall, kind="stable")
    r, env = recall[order], _envelope(precision[order])
    steps = np.diff(np.r_[0.0, r])
    return float((steps * env).sum())
