"""The BEV detector: LiDAR encoder (+ camera encoder + fusion) + CenterPoint head (+ pretraining heads).

``model(batch)`` returns a `DetectorOutputs`; losses are separate functions of ``(outputs, batch)``
(`drivetl.train.losses`). Nothing is kept on the module between the two.

Parameter names (stable, used by fine-tuning and checkpoints):
``lidar.*`` LiDAR encoder (``lidar.pfn``, ``lidar.backbone``, ``lidar.neck``), ``camera.*`` camera
encoder (``camera.backbone``, ``camera.mix``), ``fusion.*``, ``head.*`` detection head,
``occupancy_head.*`` and ``align_head.*`` pretraining-only heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from drivetl.data.collate import Batch
from drivetl.models._blocks import ConvBNReLU
from drivetl.models.camera.encoder import CameraEncoder, CameraOutputs
from drivetl.models.fusion import BEVFusion
from drivetl.models.heads._coding import BoxCoding, prior_sizes
from drivetl.models.heads._targets import BEVGeometry
from drivetl.models.heads.centerpoint import CenterHead, Detections, decode
from drivetl.models.lidar.encoder import LidarEncoder, LidarOutputs

__all__ = ["BEVDetector", "DetectorOutputs", "add_ground"]


def add_ground(regression: torch.Tensor, ground: torch.Tensor | None) -> torch.Tensor:
    """The head's regression (B, C, H, W) with the local ground (B, 1, H, W) added to its z channel:
    with an encoder `ground_window` the head regresses a box centre's height above the ground under
    it and the maps hold the absolute z every decoder reads. `regression` itself when `ground` is None."""
    if ground is None:
        return regression
    z = regression[:, 2:3] + ground.to(regression.dtype)
    return torch.cat([regression[:, :2], z, regression[:, 3:]], 1)


@dataclass(frozen=True)
class DetectorOutputs:
    """Outputs for a batch of B frames; all maps share `geometry` (H x W cells).

    heatmap: (B, K, H, W) class logits. regression: (B, C, H, W) (see `CenterHead`), encoded as
    `coding` says (the head's `BoxCoding`: pass it to `decode` and to the targets).
    lidar: the LiDAR encoder's outputs (BEV features, point statistics, pretraining mask).
    camera: the camera encoder's outputs, None for a LiDAR-only model.
    camera_kept: (B,) bool, False where camera dropout removed the camera branch for that frame.
    fused: (B, C, H, W) the features the detection head saw.
    occupancy: (B, 3, H, W) masked-occupancy predictions (occupied logit, log(1 + points), mean height m),
        None without an occupancy head.
    camera_to_lidar: (B, C_lidar, H, W) camera BEV's prediction of the LiDAR BEV, None without one.
    """

    heatmap: torch.Tensor
    regression: torch.Tensor
    geometry: BEVGeometry
    lidar: LidarOutputs
    camera: CameraOutputs | None
    camera_kept: torch.Tensor
    fused: torch.Tensor
    occupancy: torch.Tensor | None
    camera_to_lidar: torch.Tensor | None
    coding: BoxCoding = field(default_factory=BoxCoding)

    def detections(self, **kwargs: Any) -> list[Detections]:
        """The boxes of every frame: `drivetl.models.heads.decode` of the heatmap and regression
        with this output's geometry and box coding; `kwargs` as `decode` takes them."""
        return decode(self.heatmap, self.regression, self.geometry, coding=self.coding, **kwargs)


class BEVDetector(nn.Module):
    """LiDAR (+ camera) BEV detector.

    classes: class names, in head channel order. lidar: the LiDAR encoder (owns the grid).
    camera: optional camera encoder. fusion_channels: fused BEV width. head_channels: head width.
    camera_dropout: probability, per frame and training step, of hiding the whole camera branch.
    camera_lift_stride: the camera lift runs on a grid this many times coarser, then is upsampled.
    occupancy_head / align_head: build the pretraining heads (masked occupancy, camera->LiDAR).
    size_priors: the head regresses box sizes relative to per-class prior sizes: True takes
        `drivetl.models.heads.CLASS_SIZES` by class name, a mapping name -> (l, w, h) metres overrides
        it, False regresses plain log sizes. direction_classifier: the head regresses the box axis
        (sin 2θ, cos 2θ) and classifies which end is the front (see `drivetl.models.heads.BoxCoding`).
    iou_score: the head predicts each box's 3D IoU with its object, and decoding ranks boxes by
        ``heatmap^(1 - iou_alpha) * iou^iou_alpha`` (CIA-SSD, AFDet, CenterPoint++).
    """

    def __init__(
        self,
        classes: Sequence[str],
        lidar: LidarEncoder,
        camera: CameraEncoder | None = None,
        fusion_channels: int = 64,
        head_channels: int = 64,
        camera_dropout: float = 0.0,
        camera_lift_stride: int = 1,
        occupancy_head: bool = True,
        align_head: bool = True,
        size_priors: bool | Mapping[str, Sequence[float]] = False,
        direction_classifier: bool = False,
        iou_score: bool = False,
        iou_alpha: float = 0.5,
    ):
        super().__init__()
        self.classes = tuple(classes)
        self.lidar = lidar
        self.camera = camera
        self.camera_dropout = float(camera_dropout)
        self.camera_lift_stride = int(camera_lift_stride)
        feat = lidar.out_channels
        self.fusion = None
        if camera is not None:
            self.fusion = BEVFusion(lidar.out_channels, camera.out_channels, fusion_channels)
            feat = fusion_channels
        self.head = CenterHead(
            feat,
            len(self.classes),
            head_channels,
            size_priors=prior_sizes(self.classes, size_priors),
            direction=direction_classifier,
            iou_score=iou_score,
            iou_alpha=iou_alpha,
        )
        self.occupancy_head = None
        if occupancy_head:
            self.occupancy_head = nn.Sequential(
                ConvBNReLU(lidar.out_channels, lidar.out_channels, 3), nn.Conv2d(lidar.out_channels, 3, 1)
            )
        self.align_head = None
        if align_head and camera is not None:
            self.align_head = nn.Sequential(
                ConvBNReLU(camera.out_channels, camera.out_channels, 3),
                nn.Conv2d(camera.out_channels, lidar.out_channels, 1),
            )

    @property
    def geometry(self) -> BEVGeometry:
        """The BEV grid of the output maps (the LiDAR encoder's grid at its output stride)."""
        g = self.lidar.grid
        cx, cy = self.lidar.bev_cell_size
        h, w = self.lidar.bev_shape
        return BEVGeometry(g.point_range[0], g.point_range[1], cx, cy, h, w)

    def forward(self, batch: Batch, *, mask_ratio: float = 0.0) -> DetectorOutputs:
        """Run the model on `batch`; `mask_ratio` > 0 hides that share of LiDAR BEV cells (pretraining)."""
        geo = self.geometry
        lid = self.lidar(batch.points, batch.offsets, batch.columns, mask_ratio=mask_ratio)
        b = batch.batch_size
        kept = torch.ones(b, dtype=torch.bool, device=lid.bev.device)
        cam = None
        fused = lid.bev
        if self.camera is not None:
            s = self.camera_lift_stride
            cam = self.camera(
                batch,
                geo.x_min,
                geo.y_min,
                (geo.cell_x * s, geo.cell_y * s),
                (geo.height // s, geo.width // s),
            )
            if s != 1:
                cam = CameraOutputs(
                    F.interpolate(
                        cam.bev, size=(geo.height, geo.width), mode="bilinear", align_corners=False
                    ),
                    F.interpolate(cam.coverage, size=(geo.height, geo.width), mode="nearest"),
                )
            if self.training and self.camera_dropout > 0:
                kept = torch.rand(b, device=kept.device) >= self.camera_dropout
            coverage = cam.coverage * kept.view(b, 1, 1, 1).to(cam.coverage.dtype)
            fused = self.fusion(lid.bev, cam.bev, coverage)
        heatmap, regression = self.head(fused)
        regression = add_ground(regression, lid.ground)
        occupancy = self.occupancy_head(lid.bev) if self.occupancy_head is not None else None
        align = self.align_head(cam.bev) if (self.align_head is not None and cam is not None) else None
        return DetectorOutputs(
            heatmap, regression, geo, lid, cam, kept, fused, occupancy, align, self.head.coding
        )
