"""The camera encoder: an image backbone and a calibration-explicit lift of image features to BEV.

Lift. Every BEV cell centre is lifted to a few heights above the ground (the canonical frame has
the ground at z = 0), projected into every view with that frame's own intrinsics, distortion and
`camera_from_vehicle`, and the image features there are sampled (bilinear `grid_sample`). Per
height, the samples are averaged over the views that see the point; the heights are stacked as
channels and mixed by a 1x1 conv, so vertical structure is kept without a depth model.

Why sampling instead of an LSS-style depth distribution: the mapping from BEV to pixels is fixed by
the calibration and has no learned geometric part, so a new rig (other intrinsics, distortion,
mounting) changes only the tensors, not anything the network learned — which is what adaptation to
a fleet rig needs. It is also cheaper (no per-pixel depth bins to splat) and has no depth head that
would overfit to the source camera's focal length. The price is that a ray's features are smeared
along the cells it crosses; the LiDAR branch and the alignment objective supply the depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from drivetl.models._blocks import ConvBNReLU, FPNNeck, ResidualStages
from drivetl.models.camera._projection import project_points

__all__ = ["CameraEncoder", "CameraOutputs", "ImageBackbone"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class ImageBackbone(nn.Module):
    """ResNet-style image backbone built here (no downloaded weights), or a timm model when named.

    forward: (N, 3, H, W) float RGB in [0, 1] -> (N, out_channels, H / out_stride, W / out_stride).
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64),
        depths: Sequence[int] = (1, 1, 1),
        out_channels: int = 32,
        out_stride: int = 8,
        timm_name: str | None = None,
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.timm = None
        if timm_name:
            try:
                import timm
            except ImportError as exc:
                raise ImportError(f"ImageBackbone: timm_name={timm_name!r} needs `pip install timm`") from exc
            self.timm = timm.create_model(timm_name, pretrained=False, features_only=True)
            chans = self.timm.feature_info.channels()
            strides = self.timm.feature_info.reduction()
        else:
            self.stem = ConvBNReLU(3, widths[0], 3, 2)
            self.stages = ResidualStages(widths[0], widths, depths, (2,) * len(widths))
            chans = list(widths)
            strides = [2 * s for s in self.stages.cumulative_strides]
        self.neck = FPNNeck(chans, strides, out_channels, out_stride)
        self.out_channels = out_channels
        self.out_stride = out_stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images through the backbone and the neck (shapes: the class docstring)."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        feats = self.timm(x) if self.timm is not None else self.stages(self.stem(x))
        return self.neck(feats)


@dataclass(frozen=True)
class CameraOutputs:
    """bev: (B, C, H, W) camera BEV features; coverage: (B, 1, H, W) float, 1 where a view sees the cell."""

    bev: torch.Tensor
    coverage: torch.Tensor


class CameraEncoder(nn.Module):
    """Image backbone + calibrated BEV lift onto the BEV grid given at call time.

    heights: metres above the ground at which cell centres are projected. out_channels: BEV channels.
    """

    def __init__(
        self,
        backbone: ImageBackbone | None = None,
        heights: Sequence[float] = (0.5, 1.25, 2.0),
        out_channels: int = 32,
    ):
        super().__init__()
        self.backbone = backbone if backbone is not None else ImageBackbone()
        self.heights = tuple(float(h) for h in heights)
        c = self.backbone.out_channels
        self.mix = nn.Sequential(
            ConvBNReLU(c * len(self.heights), out_channels, 1), ConvBNReLU(out_channels, out_channels, 3)
        )
        self.out_channels = out_channels

    def bev_points(
        self,
        x_min: float,
        y_min: float,
        cell: tuple[float, float],
        shape: tuple[int, int],
        device: torch.device,
    ) -> torch.Tensor:
        """(Z * H * W, 3) vehicle-frame points: every cell centre at every height (height-major)."""
        h, w = shape
        ys = y_min + (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * cell[1]
        xs = x_min + (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * cell[0]
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pts = [torch.stack([gx, gy, torch.full_like(gx, z)], -1).reshape(-1, 3) for z in self.heights]
        return torch.cat(pts, 0)

    def forward(
        self, batch, x_min: float, y_min: float, cell: tuple[float, float], shape: tuple[int, int]
    ) -> CameraOutputs:
        """Lift `batch.images` (B, V, 3, Hi, Wi) to a (B, C, H, W) BEV map whose cell (iy, ix) is centred
        at (x_min + (ix + 0.5) * cell[0], y_min + (iy + 0.5) * cell[1]) in the vehicle frame."""
        b, v = batch.images.shape[:2]
        h, w = shape
        dev = batch.images.device
        nz = len(self.heights)
        if v == 0:
            zeros = batch.images.new_zeros((b, self.backbone.out_channels * nz, h, w))
            return CameraOutputs(self.mix(zeros), zeros.new_zeros((b, 1, h, w)))
        feats = self.backbone(batch.images.flatten(0, 1))  # (B*V, C, Hf, Wf)
        pts = self.bev_points(x_min, y_min, cell, shape, dev)
        uv, _, ok = project_points(
            pts,
            batch.camera_K.float(),
            batch.camera_distortion.float(),
            batch.camera_from_vehicle.float(),
            batch.image_size,
        )
        ok = ok & batch.camera_valid[:, :, None]
        size = batch.image_size.to(uv.dtype)[:, :, None, :]
        grid = (2.0 * uv / size - 1.0).flatten(0, 1)[:, :, None, :]  # (B*V, P, 1, 2)
        # sampled in float32 also under autocast: a bfloat16 grid would move samples by a tenth of a
        # feature pixel, and the backward pass would sum many bfloat16 gradients into each pixel
        sampled = F.grid_sample(feats.float(), grid.float(), mode="bilinear", align_corners=False)
        c = feats.shape[1]
        sampled = sampled.view(b, v, c, nz, h, w)
        weight = ok.view(b, v, 1, nz, h, w).to(sampled.dtype)
        total = weight.sum(1)  # (B, 1, Z, H, W)
        mean = (sampled * weight).sum(1) / total.clamp(min=1.0)
        coverage = (total.sum(2) > 0).to(sampled.dtype)  # (B, 1, H, W)
        return CameraOutputs(self.mix(mean.reshape(b, c * nz, h, w)), coverage)
