"""drivetl.models.heads: CenterPoint-style detection head, target assignment, decoding, rotated NMS."""

from drivetl.models.heads._coding import CLASS_SIZES, DIRECTION_AXIS, BoxCoding, prior_sizes
from drivetl.models.heads._rotated_iou import bev_corners, paired_iou_3d, rotated_iou_bev, rotated_nms
from drivetl.models.heads._targets import (
    REGRESSION,
    BEVGeometry,
    HeadTargets,
    assign_targets,
    gaussian_radius,
)
from drivetl.models.heads.centerpoint import CenterHead, Detections, decode

__all__ = [
    "CLASS_SIZES",
    "DIRECTION_AXIS",
    "REGRESSION",
    "BEVGeometry",
    "BoxCoding",
    "CenterHead",
    "Detections",
    "HeadTargets",
    "assign_targets",
    "bev_corners",
    "decode",
    "gaussian_radius",
    "paired_iou_3d",
    "prior_sizes",
    "rotated_iou_bev",
    "rotated_nms",
]
