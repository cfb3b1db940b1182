"""Matching predictions to ground truth (score-first greedy, or Hungarian), and the heading accuracy
of a match."""

from __future__ import annotations

import numpy as np

#: Status of a prediction after matching.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, -1


def greedy_match(
    similarity: np.ndarray, threshold: float, gt_ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Match predictions, taken in the order of the rows, to ground-truth boxes.

    similarity: (P, G) float, rows sorted by descending prediction score; larger is better (IoU,
        or minus the centre distance). A pair can match when similarity >= threshold.
    gt_ignore: (G,) bool, ground truth that does not count (too hard for the difficulty level,
        no points); None means none is ignored.

    Each prediction in turn takes the unmatched ground truth it overlaps most, preferring
    ground truth that counts over ignored ground truth (as COCO does); each ground truth is
    matched at most once. Returns (status (P,) int8: TRUE_POSITIVE when matched to counted
    ground truth, IGNORED when matched to ignored ground truth, FALSE_POSITIVE when unmatched;
    matched (P,) int64 ground-truth index or -1).
    """
    p, g = similarity.shape
    ignore = np.zeros(g, bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    status = np.full(p, FALSE_POSITIVE, np.int8)
    matched = np.full(p, -1, np.int64)
    if p == 0 or g == 0:
        return status, matched
    ok = similarity >= threshold
    free = np.ones(g, bool)
    for i in np.flatnonzero(ok.any(axis=1)):  # rows with no candidate stay false positives
        cand = ok[i] & free
        if not cand.any():
            continue
        counted = cand & ~ignore
        pool = counted if counted.any() else cand
        j = int(np.argmax(np.where(pool, similarity[i], -np.inf)))
        matched[i] = j
        free[j] = False
        status[i] = IGNORED if ignore[j] else TRUE_POSITIVE
    return status, matched


def hungarian_match(weight: np.ndarray) -> np.ndarray:
    """The assignment of predictions to ground truth that maximizes the summed weight of its pairs.

    weight: (P, G) float >= 0, larger is better, 0 where a pair cannot match (Waymo's Hungarian
    matcher uses the IoU quantized to 1e-6 of the pairs at or above the class threshold). Each
    prediction and each ground truth is used at most once; pairs of weight 0 are never matched.
    Returns matched (P,) int64: ground-truth index, or -1.
    """
    w = np.asarray(weight, np.float64)
    matched = np.full(w.shape[0], -1, np.int64)
    if w.size == 0 or not (w > 0).any():
        return matched
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(w, maximize=True)
    ok = w[rows, cols] > 0
    matched[rows[ok]] = cols[ok]
    return matched


def heading_accuracy(pred_heading: np.ndarray, gt_heading: np.ndarray) -> np.ndarray:
    """Waymo's APH weight of a match: 1 - min(|d|, 2 pi - |d|) / pi for d = pred - gt (radians).

    1 for the same heading, 0 for opposite headings; shapes broadcast, float64 result.
    """
    d = np.abs(np.asarray(pred_heading, np.float64) - np.asarray(gt_heading, np.float64)) % (2 * np.pi)
    return 1.0 - np.minimum(d, 2 * np.pi - d) / np.pi


def centre_distance(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """BEV distance between box centres: (P, 7), (G, 7) vehicle frame -> (P, G) float64 metres."""
    return np.hypot(
        pred_boxes[:, None, 0] - gt_boxes[None, :, 0], pred_boxes[:, None, 1] - gt_boxes[None, :, 1]
    )
