"""Pretraining objectives, each a function of ``(outputs, batch)`` returning named loss terms.

- `detection_loss`: CenterPoint's focal loss on gaussian class heatmaps + L1 box regression at the
  centres (needs labels); with a direction classifier in the head, its binary cross-entropy at the
  centres too (SECOND's direction loss); with an IoU-score channel, its binary cross-entropy against
  the 3D IoU of the decoded box with its object (CIA-SSD, AFDet); optionally a DIoU loss on the
  decoded boxes themselves (`iou_weight`), which couples centre, size, height and axis as the metric
  does.
- `masked_occupancy_loss`: self-supervised; on the LiDAR BEV cells hidden from the backbone, predict
  whether the cell holds points (BCE, every masked cell), and on occupied masked cells its point count
  (log(1 + n)) and mean height (smooth L1).
- `alignment_loss`: the camera BEV predicts the (stop-gradient) LiDAR BEV features on cells that hold
  points and that a camera sees (cosine distance), which teaches the camera encoder geometry from LiDAR.

Each term is a scalar tensor; `total_loss` weighs and sums the switched-on objectives.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from drivetl.data.collate import Batch
from drivetl.models.detector import DetectorOutputs
from drivetl.models.heads import HeadTargets, assign_targets, bev_corners, paired_iou_3d

__all__ = [
    "OBJECTIVES",
    "alignment_loss",
    "detection_loss",
    "diou_loss",
    "focal_heatmap_loss",
    "masked_occupancy_loss",
    "total_loss",
]

#: regression channel weights: dx, dy, z, log l, log w, log h, sin, cos
_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
#: weight of the direction classifier's cross-entropy (SECOND and PointPillars use 0.2)
DIRECTION_WEIGHT = 0.2
#: weight of the IoU-score channel's cross-entropy
IOU_SCORE_WEIGHT = 1.0


def focal_heatmap_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CornerNet/CenterNet focal loss on (B, K, H, W) logits vs gaussian targets, per positive."""
    p = logits.float().sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_term = torch.log(p) * (1 - p).pow(alpha) * pos
    neg_term = torch.log(1 - p) * p.pow(alpha) * (1 - target).pow(beta) * (1 - pos)
    num_pos = pos.sum().clamp(min=1.0)
    return -(pos_term.sum() + neg_term.sum()) / num_pos


def detection_targets(outputs: DetectorOutputs, batch: Batch) -> HeadTargets:
    """Heatmap and regression targets of `batch`'s boxes on the outputs' BEV geometry."""
    return assign_targets(
        batch.boxes,
        batch.box_offsets,
        batch.box_classes,
        outputs.heatmap.shape[1],
        outputs.geometry,
        coding=outputs.coding,
    )


def detection_loss(
    outputs: DetectorOutputs, batch: Batch, reg_weight: float = 0.25, iou_weight: float = 0.0
) -> dict[str, torch.Tensor]:
    """{"det/heatmap", "det/regression"} (+ "det/direction" with a direction classifier, "det/iou_score"
    with an IoU channel, "det/iou" with `iou_weight` > 0): focal heatmap loss, masked L1 regression
    (per object), the direction and IoU-score cross-entropies and the DIoU loss (per object)."""
    t = detection_targets(outputs, batch)
    heat = focal_heatmap_loss(outputs.heatmap, t.heatmap)
    b, c = outputs.regression.shape[:2]
    pred = (
        outputs.regression.float().view(b, c, -1).gather(2, t.index[:, None].expand(b, c, -1)).transpose(1, 2)
    )
    w = torch.tensor(_REG_WEIGHTS, device=pred.device)
    m = t.mask[..., None].float()
    n = m.sum().clamp(min=1.0)
    l1 = ((pred[..., :8] - t.regression[..., :8]).abs() * w * m).sum() / n
    terms = {"det/heatmap": heat, "det/regression": reg_weight * l1}
    coding = outputs.coding
    if coding.direction:
        bce = F.binary_cross_entropy_with_logits(pred[..., 8], t.regression[..., 8], reduction="none")
        terms["det/direction"] = DIRECTION_WEIGHT * (bce * m[..., 0]).sum() / n
    if coding.iou or iou_weight > 0:
        keep = t.mask
        geo = outputs.geometry
        mine = coding.boxes(pred.transpose(1, 2), t.labels, t.index, geo)[keep]
        theirs = coding.boxes(t.regression.transpose(1, 2), t.labels, t.index, geo)[keep]
        zero = pred.sum() * 0.0
        if coding.iou:
            target = paired_iou_3d(mine.detach(), theirs)
            logit = pred[..., coding.iou_channel][keep]
            bce = F.binary_cross_entropy_with_logits(logit, target, reduction="sum") if keep.any() else zero
            terms["det/iou_score"] = IOU_SCORE_WEIGHT * bce / n
        if iou_weight > 0:
            terms["det/iou"] = iou_weight * diou_loss(mine, theirs).sum() / n if keep.any() else zero
    return terms


def diou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per pair (N,): 1 - 3D IoU + squared centre distance over the squared diagonal of the region both
    boxes span (Distance-IoU, Zheng et al. 2020; the region is axis-aligned around both boxes' BEV
    corners and heights), which still pulls a box that does not overlap its object."""
    iou = paired_iou_3d(pred, target)
    corners = torch.cat([bev_corners(pred), bev_corners(target)], 1)  # (N, 8, 2)
    span_xy = corners.amax(1) - corners.amin(1)
    top = torch.maximum(pred[:, 2] + pred[:, 5] / 2, target[:, 2] + target[:, 5] / 2)
    bottom = torch.minimum(pred[:, 2] - pred[:, 5] / 2, target[:, 2] - target[:, 5] / 2)
    diagonal = (span_xy.pow(2).sum(1) + (top - bottom).pow(2)).clamp(min=1e-6)
    distance = (pred[:, :3] - target[:, :3]).pow(2).sum(1)
    return 1.0 - iou + distance / diagonal


def masked_occupancy_loss(outputs: DetectorOutputs, batch: Batch) -> dict[str, torch.Tensor]:
    """{"occ/occupied", "occ/count", "occ/height"} on the masked cells (zeros when none is masked)."""
    if outputs.occupancy is None:
        raise ValueError("masked_occupancy_loss: the model has no occupancy head (occupancy_head: true)")
    lid = outputs.lidar
    mask = lid.mask
    pred = outputs.occupancy.float()
    zero = pred.sum() * 0.0
    if not bool(mask.any()):
        return {"occ/occupied": zero, "occ/count": zero, "occ/height": zero}
    occupied = (lid.point_count > 0).float()
    bce = F.binary_cross_entropy_with_logits(pred[:, 0][mask], occupied[mask])
    full = mask & (lid.point_count > 0)
    if not bool(full.any()):
        return {"occ/occupied": bce, "occ/count": zero, "occ/height": zero}
    count = F.smooth_l1_loss(pred[:, 1][full], torch.log1p(lid.point_count[full]))
    height = F.smooth_l1_loss(pred[:, 2][full], lid.mean_height[full])
    return {"occ/occupied": bce, "occ/count": count, "occ/height": height}


def alignment_loss(outputs: DetectorOutputs, batch: Batch) -> dict[str, torch.Tensor]:
    """{"align/cosine"}: 1 - cosine(camera prediction, LiDAR BEV.detach()) on seen cells with points."""
    if outputs.camera_to_lidar is None or outputs.camera is None:
        raise ValueError(
            "alignment_loss: the model has no camera encoder or no align head (align_head: true)"
        )
    target = outputs.lidar.bev.detach().float()
    pred = outputs.camera_to_lidar.float()
    cells = (outputs.lidar.point_count > 0) & (outputs.camera.coverage[:, 0] > 0)
    if not bool(cells.any()):
        return {"align/cosine": pred.sum() * 0.0}
    cos = F.cosine_similarity(pred, target, dim=1)  # (B, H, W)
    return {"align/cosine": (1.0 - cos)[cells].mean()}


#: objective name -> loss function
OBJECTIVES = {
    "detection": detection_loss,
    "occupancy": masked_occupancy_loss,
    "alignment": alignment_loss,
}


def total_loss(
    outputs: DetectorOutputs, batch: Batch, weights: Mapping[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the objectives with a weight > 0, and every named term (unweighted)."""
    terms: dict[str, torch.Tensor] = {}
    total = outputs.heatmap.sum() * 0.0
    for name, weight in weights.items():
        if name not in OBJECTIVES:
            raise KeyError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}")
        if weight <= 0:
            continue
        parts = OBJECTIVES[name](outputs, batch)
        terms.update(parts)
        total = total + weight * sum(parts.values())
    return total, terms
