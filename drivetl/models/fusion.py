"""LiDAR + camera BEV fusion, robust to missing cameras."""

from __future__ import annotations

import torch
from torch import nn

from drivetl.models._blocks import ConvBNReLU

__all__ = ["BEVFusion"]


class BEVFusion(nn.Module):
    """Concatenate LiDAR and camera BEV maps and mix them with two 3x3 convs.

    forward: lidar (B, Cl, H, W), camera (B, Cc, H, W), coverage (B, 1, H, W) in [0, 1] ->
    (B, out_channels, H, W). Camera features are multiplied by `coverage` first, so a cell no view
    sees, a frame without cameras and a dropped camera branch all look the same to the fusion: zeros.
    Training with camera dropout therefore teaches the fused model to work from LiDAR alone.
    """

    def __init__(self, lidar_channels: int, camera_channels: int, out_channels: int):
        super().__init__()
        self.mix = nn.Sequential(
            ConvBNReLU(lidar_channels + camera_channels, out_channels, 3),
            ConvBNReLU(out_channels, out_channels, 3),
        )
        self.out_channels = out_channels

    def forward(self, lidar: torch.Tensor, camera: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
        """The fused BEV map (shapes: the class docstring)."""
        return self.mix(torch.cat([lidar, camera * coverage.to(camera.dtype)], 1))
