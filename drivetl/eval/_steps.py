"""One frame's detection counts for one class and range band, as steps along descending scores.

For a score threshold t, the predictions with score >= t are matched to the ground truth and give
counts TP, FP, FN and H (summed heading accuracy of the true positives). As t falls through the
frame's own distinct scores the counts change only there, so a frame is kept as its counts with no
prediction (FN = the ground truth the level counts) plus one step (score, dTP, dFP, dFN, dH) per
change. Summing the steps of every frame above a threshold gives the dataset's counts at that
threshold, for any set of thresholds (every distinct score, or fixed score cutoffs).

Score-first matching of the predictions above a threshold is the start of the matching of all of
them (each prediction only sees those with higher scores), so each prediction is one step. The
Hungarian assignment is recomputed at each distinct score (Waymo's op matches anew at every score
cutoff), only where predictions that can match anything join.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivetl.eval._matching import IGNORED, TRUE_POSITIVE, greedy_match, hungarian_match


@dataclass(frozen=True, eq=False)
class Steps:
    """Count changes along descending scores, all (K,): score float64, tp/fp/fn int64, heading float64."""

    score: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    heading: np.ndarray

    @staticmethod
    def empty() -> Steps:
        z = np.zeros(0, np.int64)
        return Steps(np.zeros(0), z, z, z, np.zeros(0))

    def __len__(self) -> int:
        return int(self.score.size)


def band_steps(
    scores: np.ndarray,
    similarity: np.ndarray,
    threshold: float,
    weight: np.ndarray,
    accuracy: np.ndarray,
    gt_level: np.ndarray,
    levels: tuple[int, ...],
    matching: str,
    harder_matches: str,
) -> tuple[list[Steps], list[int]]:
    """Steps and counted ground truth per level for one class and band of one frame.

    scores: (P,) float64, descending. similarity: (P, G) float, larger is better; a pair can match
    when similarity >= threshold. weight: (P, G) float Hungarian weights (> 0 where a pair can
    match). accuracy: (P, G) heading accuracy of each pair. gt_level: (G,) int 1 or 2, or 0 for
    ground truth ignored at every level. levels: the levels, e.g. (1, 2); level L counts ground
    truth with 1 <= level <= L. matching: "score_first" or "hungarian". harder_matches: "ignore" or
    "true_positive" (what a match to ground truth harder than the level counts as).
    Returns ([Steps per level], [counted ground truth per level]).
    """
    counted = [(gt_level >= 1) & (gt_level <= lv) for lv in levels]
    num_gt = [int(c.sum()) for c in counted]
    if scores.size == 0:
        return [Steps.empty() for _ in levels], num_gt
    if matching == "score_first":
        steps = _score_first(scores, similarity, threshold, accuracy, gt_level, counted, harder_matches)
    else:
        candidate = similarity >= threshold
        steps = _hungarian(scores, candidate, weight, accuracy, gt_level, counted, harder_matches)
    return steps, num_gt


def _score_first(scores, similarity, threshold, accuracy, gt_level, counted, harder_matches) -> list[Steps]:
    out = []
    shared = None
    if harder_matches == "true_positive":  # one matching: difficulty plays no part in it
        shared = greedy_match(similarity, threshold, gt_level == 0)
    for c in counted:
        status, matched = shared if shared is not None else greedy_match(similarity, threshold, ~c)
        keep = status != IGNORED
        hit = keep & (status == TRUE_POSITIVE)
        rows = np.flatnonzero(hit)
        fn = np.zeros(scores.size, np.int64)
        fn[rows] = -c[matched[rows]].astype(np.int64)
        h = np.zeros(scores.size)
        h[rows] = accuracy[rows, matched[rows]]
        tp = hit[keep].astype(np.int64)
        out.append(Steps(scores[keep], tp, 1 - tp, fn[keep], h[keep]))
    return out


def _counts(matched: np.ndarray, accuracy, gt_level, counted, harder_matches) -> np.ndarray:
    """(TP, FP, FN, H) per level of one assignment: (levels, 4) float64."""
    rows = np.flatnonzero(matched >= 0)
    g = matched[rows]
    out = np.zeros((len(counted), 4))
    for i, c in enumerate(counted):
        true = c[g] if harder_matches == "ignore" else gt_level[g] != 0
        out[i] = (
            true.sum(),
            matched.size - rows.size,
            c.sum() - c[g].sum(),
            accuracy[rows[true], g[true]].sum(),
        )
    return out


def _hungarian(scores, candidate, weight, accuracy, gt_level, counted, harder_matches) -> list[Steps]:
    ends = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True]) + 1  # end of each equal-score group
    can_rows = candidate.any(axis=1)
    cols = np.flatnonzero(candidate.any(axis=0))
    previous = np.array([[0.0, 0.0, float(c.sum()), 0.0] for c in counted])
    matched = np.full(0, -1, np.int64)
    rows_step, deltas = [], []
    start = 0
    for end in ends:
        grown = np.full(end, -1, np.int64)
        if can_rows[start:end].any():
            rows = np.flatnonzero(can_rows[:end])
            sub = np.where(candidate[np.ix_(rows, cols)], weight[np.ix_(rows, cols)], 0.0)
            m = hungarian_match(sub)
            grown[rows[m >= 0]] = cols[m[m >= 0]]
        else:  # nothing new can match: the assignment stays, the newcomers are false positives
            grown[:start] = matched
        matched = grown
        now = _counts(matched, accuracy, gt_level, counted, harder_matches)
        rows_step.append(end - 1)
        deltas.append(now - previous)
        previous = now
        start = end
    d = np.stack(deltas, axis=1)  # (levels, K, 4)
    s = scores[np.asarray(rows_step)]
    return [
        Steps(s, np.rint(x[:, 0]).astype(np.int64), np.rint(x[:, 1]).astype(np.int64),
              np.rint(x[:, 2]).astype(np.int64), x[:, 3].copy())
        for x in d
    ]
