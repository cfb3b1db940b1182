"""Convolution building blocks shared by the BEV and image backbones: residual stages and an FPN neck."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvBNReLU", "BasicBlock", "ResidualStages", "FPNNeck"]


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
            nn.ReLU(inplace=True),
        )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a (projected when needed) identity shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNReLU(cin, cout, 3, stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.conv1(x)))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class ResidualStages(nn.Module):
    """Stages of basic blocks; stage i starts with stride `strides[i]` and has `depths[i]` blocks.

    forward: (B, in_channels, H, W) -> list of (B, widths[i], H / s_i, W / s_i), s_i the cumulative stride.
    """

    def __init__(
        self, in_channels: int, widths: Sequence[int], depths: Sequence[int], strides: Sequence[int]
    ):
        super().__init__()
        if not (len(widths) == len(depths) == len(strides)):
            raise ValueError(
                f"widths {widths}, depths {depths}, strides {strides} must have one entry per stage"
            )
        stages, cin = [], in_channels
        for w, d, s in zip(widths, depths, strides, strict=True):
            blocks = [BasicBlock(cin, w, s)] + [BasicBlock(w, w) for _ in range(max(d, 1) - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.widths = tuple(widths)
        cum, total = [], 1
        for s in strides:
            total *= s
            cum.append(total)
        self.cumulative_strides = tuple(cum)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class FPNNeck(nn.Module):
    """Top-down feature pyramid to one output map at stride `out_stride` (one of the input strides).

    Each level gets a 1x1 lateral conv to `out_channels`; coarser levels are upsampled and summed into
    finer ones (finer-than-output levels are average-pooled down), then a 3x3 conv smooths the sum.
    """

    def __init__(
        self, in_channels: Sequence[int], strides: Sequence[int], out_channels: int, out_stride: int
    ):
        super().__init__()
        if out_stride not in strides:
            raise ValueError(
                f"FPN out_stride {out_stride} must be one of the backbone strides {tuple(strides)}"
            )
        self.strides = tuple(strides)
        self.out_stride = out_stride
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.smooth = ConvBNReLU(out_channels, out_channels, 3)
        self.out_channels = out_channels

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        target = feats[self.strides.index(self.out_stride)].shape[-2:]
        acc = None
        for f, lat, s in zip(feats, self.lateral, self.strides, strict=True):
            y = lat(f)
            if s < self.out_stride:
                y = F.adaptive_avg_pool2d(y, target)
            elif s > self.out_stride:
                y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
            acc = y if acc is None else acc + y
        return self.smooth(acc)
