"""drivetl.models.heads: CenterPoint-style detection head, target assignment, decoding, rotated NMS."""

from drivetl.models.heads._rotated_iou import bev_corners, rotated_iou_bev, rotated_nms
from drivetl.models.heads._targets import (
    REGRESSION,
    BEVGeometry,
    HeadTargets,
    assign_targets,
    gaussian_radius,
)
from drivetl.models.heads.centerpoint import CenterHead, Detections, decode

__all__ = [
    "REGRESSION",
    "BEVGeometry",
    "CenterHead",
    "Detections",
    "HeadTargets",
    "assign_targets",
    "bev_corners",
    "decode",
    "gaussian_radius",
    "rotated_iou_bev",
    "rotated_nms",
]
