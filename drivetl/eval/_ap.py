"""Precision/recall curves and average precision from matched detection counts.

A curve is built from the counts at a series of score thresholds, highest first: true positives
TP, false positives FP, false negatives FN and the summed heading accuracy H of the true positives
(each in [0, 1]). At each threshold

    recall = TP / (TP + FN),   precision = TP / (TP + FP),   heading precision = H / (TP + FP).

APH is AP with the heading precision in place of the precision, at the same recall: only the
precision is weighted by heading accuracy, as in Waymo's official metrics (their op keeps a
"heading-weighted recall" too, but fills it with the plain TP recall).

Two integrations:

- `average_precision` (recall grid): curve points at each distinct score; the precision at recall
  r is the highest precision at any recall >= r (the monotone envelope of PASCAL VOC and COCO);
  AP is its mean on K evenly spaced recalls 0, 1/(K-1), ..., 1 (K = 101 as in COCO; a recall never
  reached contributes 0), or, with K = 0, the exact area under that step curve.
- `cutoff_average_precision` (Waymo's op): precision and recall at fixed score cutoffs; a cutoff
  where nothing is recalled has precision 1; each distinct recall keeps its best precision and
  recall 0 starts at precision 1; walking from the highest recall down, the precision is the best
  one seen so far (so: the best at any higher recall), and where two recalls are more than
  `recall_delta` apart, points are added every `recall_delta` below the higher one at the
  precision reached before the lower point; the point at recall 0 takes the precision of its
  neighbour; the area is summed by trapezoids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Slack on the recall gap before the cutoff integration adds points (Waymo's op uses 1e-6).
_GAP_SLACK = 1e-6


@dataclass(frozen=True, eq=False)
class PRCurve:
    """A precision/recall curve, one point per score threshold (descending scores).

    recall, precision, heading_precision: (K,) float64 (APH uses heading_precision at the same
    recall); scores: (K,) float64 thresholds (NaN where unknown, e.g. a curve read back from JSON).
    """

    recall: np.ndarray
    precision: np.ndarray
    heading_precision: np.ndarray
    scores: np.ndarray

    def interpolated(self, recall_grid: np.ndarray, heading: bool = False) -> np.ndarray:
        """Interpolated precision (max precision at recall >= r) at each r of recall_grid -> (R,)."""
        precision = self.heading_precision if heading else self.precision
        return _interpolate(self.recall, precision, np.asarray(recall_grid, np.float64))


def _envelope(precision: np.ndarray) -> np.ndarray:
    """Running maximum from the right: envelope[i] = max(precision[i:])."""
    return np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision


def _interpolate(recall: np.ndarray, precision: np.ndarray, grid: np.ndarray) -> np.ndarray:
    if recall.size == 0:
        return np.zeros_like(grid)
    # With a fixed ground-truth count recall never decreases along the curve, but with Hungarian
    # matching or LEVEL_2 matches counted at LEVEL_1 it may; sort (stable) by recall.
    order = np.argsort(recall, kind="stable")
    r, env = recall[order], _envelope(precision[order])
    idx = np.searchsorted(r, grid - 1e-12, side="left")
    return np.where(idx < r.size, env[np.minimum(idx, r.size - 1)], 0.0)


def counts_curve(
    scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, heading_sum: np.ndarray
) -> PRCurve:
    """The curve of counts at K thresholds (all (K,), scores descending; see the module doc).

    A threshold with no counted prediction has precision 0; with nothing to recall, recall 0.
    """
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    h = np.asarray(heading_sum, np.float64)
    n_pred, n_obj = tp + fp, tp + fn
    return PRCurve(
        recall=np.divide(tp, n_obj, out=np.zeros_like(tp), where=n_obj > 0),
        precision=np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0),
        heading_precision=np.divide(h, n_pred, out=np.zeros_like(h), where=n_pred > 0),
        scores=np.asarray(scores, np.float64),
    )


def pr_curve(scores: np.ndarray, true_positive: np.ndarray, weight: np.ndarray, num_gt: int) -> PRCurve:
    """The curve of one class/breakdown from per-prediction outcomes (score-first matching).

    scores: (P,) float, true_positive: (P,) bool, weight: (P,) float heading accuracy of each true
    positive (ignored for false positives); num_gt: ground-truth boxes that count. One point per
    distinct score (equal scores enter together).
    """
    scores = np.asarray(scores, np.float64)
    tp = np.asarray(true_positive, bool)
    w = np.where(tp, np.asarray(weight, np.float64), 0.0)
    order = np.argsort(-scores, kind="stable")
    s, tp, w = scores[order], tp[order], w[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.zeros(0, np.int64)
    cum_tp, cum_n = np.cumsum(tp)[last], np.arange(1, s.size + 1)[last]
    return counts_curve(s[last], cum_tp, cum_n - cum_tp, num_gt - cum_tp, np.cumsum(w)[last])


def average_precision(curve: PRCurve, num_gt: int, recall_points: int = 101, heading: bool = False) -> float:
    """AP (or APH with heading=True) of a curve on the recall grid; NaN when num_gt <= 0."""
    if num_gt <= 0:
        return float("nan")
    precision = curve.heading_precision if heading else curve.precision
    if curve.recall.size == 0:
        return 0.0
    if recall_points >= 2:
        grid = np.linspace(0.0, 1.0, recall_points)
        return float(_interpolate(curve.recall, precision, grid).mean())
    order = np.argsort(curve.recall, kind="stable")
    r, env = curve.recall[order], _envelope(precision[order])
    steps = np.diff(np.r_[0.0, r])
    return float((steps * env).sum())


def cutoff_curve(
    cutoffs: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, heading_sum: np.ndarray
) -> PRCurve:
    """The curve at fixed score cutoffs as Waymo's op builds it: `counts_curve`, in float32, with
    precision (and heading precision) 1 wherever the recall is 0."""
    c = counts_curve(cutoffs, tp, fp, fn, heading_sum)
    recall = c.recall.astype(np.float32)
    nothing = recall == 0
    return PRCurve(
        recall=recall.astype(np.float64),
        precision=np.where(nothing, 1.0, c.precision.astype(np.float32)).astype(np.float64),
        heading_precision=np.where(nothing, 1.0, c.heading_precision.astype(np.float32)).astype(np.float64),
        scores=c.scores,
    )


def cutoff_average_precision(
    curve: PRCurve, num_gt: int, recall_delta: float = 0.05, heading: bool = False
) -> float:
    """AP (or APH) of a `cutoff_curve` integrated as Waymo's op does (module doc); NaN when num_gt <= 0."""
    if num_gt <= 0:
        return float("nan")
    precision = curve.heading_precision if heading else curve.precision
    if curve.recall.size == 0:
        return 0.0
    best: dict[float, float] = {0.0: 1.0}
    for r, p in zip(curve.recall.tolist(), precision.tolist(), strict=True):
        best[r] = max(best.get(r, 0.0), p)
    recalls = sorted(best, reverse=True)
    points: list[tuple[float, float]] = []  # (recall, precision), recall descending
    previous, running = recalls[-1], 0.0
    for r in recalls:
        while previous - r > recall_delta + _GAP_SLACK:
            previous -= recall_delta
            points.append((previous, running))
        running = max(running, best[r])
        points.append((r, running))
        previous = r
    if len(points) < 2:
        return 0.0
    points[-1] = (points[-1][0], points[-2][1])
    pairs = zip(points, points[1:], strict=False)
    return float(sum(0.5 * (r0 - r1) * (p0 + p1) for (r0, p0), (r1, p1) in pairs))
