"""A simple detection metric for training runs: BEV centre recall/precision at a distance threshold.

A ground-truth box counts as found when an unmatched detection of the same class, above the score
threshold, has its BEV centre within `distance` metres (greedy matching, best score first). It is a
sanity metric for pretraining curves; `drivetl.eval` computes AP/APH.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from drivetl.models.heads import Detections

__all__ = ["CentreMatch", "centre_matches"]


@dataclass(frozen=True)
class CentreMatch:
    """Counts over a batch: matched ground truths, ground truths, detections considered."""

    matched: int
    ground_truth: int
    detections: int

    @property
    def recall(self) -> float:
        """Matched ground truth / ground truth (NaN without ground truth)."""
        return self.matched / self.ground_truth if self.ground_truth else 0.0

    @property
    def precision(self) -> float:
        """Matched detections / detections (NaN without detections)."""
        return self.matched / self.detections if self.detections else 0.0


def centre_matches(
    detections: Sequence[Detections],
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    *,
    distance: float = 2.0,
    score_threshold: float = 0.3,
) -> CentreMatch:
    """Match per frame: detections[i] vs gt_boxes[i] (M, 7) vehicle frame and gt_labels[i] (M,) int64."""
    matched = total = count = 0
    for det, boxes, labels in zip(detections, gt_boxes, gt_labels, strict=True):
        keep = det.scores >= score_threshold
        d_xy, d_lab = det.boxes[keep, :2].float().cpu(), det.labels[keep].cpu()
        order = det.scores[keep].argsort(descending=True).cpu()
        g_xy, g_lab = boxes[:, :2].float().cpu(), labels.cpu()
        total += int(g_xy.shape[0])
        count += int(d_xy.shape[0])
        if d_xy.shape[0] == 0 or g_xy.shape[0] == 0:
            continue
        dist = torch.cdist(d_xy[order], g_xy)
        dist[d_lab[order][:, None] != g_lab[None, :]] = float("inf")
        free = torch.ones(g_xy.shape[0], dtype=torch.bool)
        for row in dist:
            row = torch.where(free, row, torch.full_like(row, float("inf")))
            j = int(row.argmin())
            if row[j] <= distance:
                free[j] = False
                matched += 1
    return CentreMatch(matched, total, count)
