"""The LiDAR encoder: dynamic pillars -> BEV canvas -> residual BEV backbone -> FPN neck.

The encoder owns its voxel grid (`grid`): it voxelizes inside `forward` on the batch's device through
`drivetl.ops`, so a pretrained encoder carries its grid to any other rig's data. BEV maps are laid
out ``[B, C, ny, nx]``: row = y cell, column = x cell, cell (iy, ix) centred at
``(x_min + (ix + 0.5) * sx * stride, y_min + (iy + 0.5) * sy * stride)`` in the vehicle frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from drivetl.models._blocks import FPNNeck, ResidualStages
from drivetl.models.lidar._pillars import (
    HEIGHT_STATS,
    PillarFeatureNet,
    VoxelGrid,
    ground_relative,
    height_stats,
    pillarize,
)

__all__ = ["LidarEncoder", "LidarOutputs"]


@dataclass(frozen=True)
class LidarOutputs:
    """What the LiDAR encoder returns for a batch of B frames.

    bev: (B, out_channels, H, W) float features at `out_stride` pillars per cell.
    point_count: (B, H, W) float32 points per output cell (all points in the grid, masked or not).
    mean_height: (B, H, W) float32 mean z (metres) of those points, 0 where empty.
    mask: (B, H, W) bool, output cells whose pillars were hidden from the backbone (all False when
        masking is off).
    ground: (B, 1, H, W) float32 local ground height (metres) per output cell, None unless the
        encoder has a `ground_window`.
    """

    bev: torch.Tensor
    point_count: torch.Tensor
    mean_height: torch.Tensor
    mask: torch.Tensor
    ground: torch.Tensor | None = None


class LidarEncoder(nn.Module):
    """Pillar LiDAR encoder.

    voxel_size: (3,) metres, pillar size (z size = the full z extent). point_range: (6,) metres,
    ``x_min, y_min, z_min, x_max, y_max, z_max``. pfn_channels: pillar feature net widths.
    widths/depths/strides: the BEV backbone's stages. out_channels/out_stride: the FPN output
    (stride in pillars, one of the cumulative backbone strides). height_features: each pillar's
    highest and lowest point and its point count (`HEIGHT_STATS`) join the pillar net's features on
    the BEV canvas, so the backbone sees roof and ground heights directly. ground_window: odd, in
    pillars (0: off): a local ground height, the lowest point within ``ground_window x
    ground_window`` pillars (`drivetl.models.lidar.local_ground`), is taken from the height
    statistics, which then hold heights above it, and is returned (`LidarOutputs.ground`) for the
    head to place boxes relative to it; needs `height_features`. The minimum trusts every point: a
    spurious return below the road (multipath, a puddle's reflection) lowers the ground of every
    cell within the window.
    """

    #: run the BEV backbone and neck channels-last (the canvas's own layout) rather than NCHW
    bev_channels_last: bool = True

    def __init__(
        self,
        voxel_size: Sequence[float] = (0.4, 0.4, 6.0),
        point_range: Sequence[float] = (-25.6, -25.6, -1.0, 25.6, 25.6, 5.0),
        pfn_channels: Sequence[int] = (32,),
        use_elongation: bool = False,
        widths: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (1, 2, 2),
        strides: Sequence[int] = (1, 2, 2),
        out_channels: int = 64,
        out_stride: int = 2,
        height_features: bool = False,
        ground_window: int = 0,
    ):
        super().__init__()
        self.grid = VoxelGrid(tuple(voxel_size), tuple(point_range))
        if self.grid.grid_shape[2] != 1:
            raise ValueError(
                f"LidarEncoder uses pillars: voxel_size z must span the z range, got {self.grid}"
            )
        nx, ny, _ = self.grid.grid_shape
        if nx % out_stride or ny % out_stride:
            raise ValueError(f"grid {nx}x{ny} pillars is not divisible by out_stride {out_stride}")
        self.pfn = PillarFeatureNet(self.grid, tuple(pfn_channels), use_elongation)
        self.height_features = bool(height_features)
        self.ground_window = int(ground_window)
        if self.ground_window and (self.ground_window < 3 or self.ground_window % 2 == 0):
            raise ValueError(
                f"ground_window must be 0 (off) or an odd number >= 3 pillars, got {ground_window}"
            )
        if self.ground_window and not self.height_features:
            raise ValueError(
                "ground_window needs height_features: true (the ground is the pillars' lowest points)"
            )
        #: channels of the BEV canvas: the pillar net's features (+ the height statistics)
        self.canvas_channels = self.pfn.out_channels + (len(HEIGHT_STATS) if self.height_features else 0)
        self.backbone = ResidualStages(self.canvas_channels, widths, depths, strides)
        self.neck = FPNNeck(self.backbone.widths, self.backbone.cumulative_strides, out_channels, out_stride)
        self.mask_token = nn.Parameter(torch.zeros(self.canvas_channels))
        self.out_channels = out_channels
        self.out_stride = out_stride

    @property
    def bev_shape(self) -> tuple[int, int]:
        """(H, W) of the output BEV map."""
        nx, ny, _ = self.grid.grid_shape
        return ny // self.out_stride, nx // self.out_stride

    @property
    def bev_cell_size(self) -> tuple[float, float]:
        """(x, y) metres per output BEV cell."""
        return self.grid.voxel_size[0] * self.out_stride, self.grid.voxel_size[1] * self.out_stride

    def forward(
        self,
        points: torch.Tensor,
        offsets: torch.Tensor,
        columns: tuple[str, ...],
        mask_ratio: float = 0.0,
    ) -> LidarOutputs:
        """points: (N, C) float32 vehicle frame; offsets: (B + 1,) int64; mask_ratio: share of output
        cells whose pillars are replaced by a learned mask token before the backbone."""
        b = int(offsets.shape[0]) - 1
        nx, ny, _ = self.grid.grid_shape
        s = self.out_stride
        h, w = ny // s, nx // s
        pillars = pillarize(points, offsets, self.grid)
        feats = self.pfn(points, columns, pillars)
        bi, iy, ix = pillars.coords.unbind(1)

        # point statistics per output cell (targets for masked occupancy)
        keep = pillars.point_pillar >= 0
        pidx = pillars.point_pillar[keep]
        cell = (bi * h + iy // s) * w + ix // s
        pt_cell = cell[pidx]
        count = torch.zeros(b * h * w, device=points.device, dtype=torch.float32)
        count.index_add_(0, pt_cell, torch.ones_like(pt_cell, dtype=torch.float32))
        zsum = torch.zeros_like(count).index_add_(0, pt_cell, points[keep, 2].float())
        mean_z = torch.where(count > 0, zsum / count.clamp(min=1), torch.zeros_like(zsum))
        mask = torch.zeros(b, h, w, dtype=torch.bool, device=points.device)
        if mask_ratio > 0:
            mask = torch.rand(b, h, w, device=points.device) < mask_ratio
        ground = None
        pillar_cell = (bi * ny + iy) * nx + ix
        if self.height_features:
            z_range = (self.grid.point_range[2], self.grid.point_range[5])
            stats = height_stats(points[keep, 2], pidx, pillars.num_pillars, z_range)
            if self.ground_window:
                hidden = mask[bi, iy // s, ix // s] if mask_ratio > 0 else None
                stats, ground = ground_relative(
                    stats, pillar_cell, (b, ny, nx), self.ground_window, s, hidden
                )
            feats = torch.cat([feats.float(), stats], 1)

        canvas = feats.new_zeros((b * ny * nx, feats.shape[1]))
        canvas = canvas.index_copy(0, pillar_cell, feats)
        canvas = canvas.view(b, ny, nx, -1).permute(0, 3, 1, 2)
        if mask_ratio > 0:
            # every pillar of a masked cell, empty or not, becomes the mask token: the backbone cannot
            # tell occupied masked cells from empty ones
            full = mask.repeat_interleave(s, 1).repeat_interleave(s, 2)[:, None]
            canvas = torch.where(full, self.mask_token.to(canvas.dtype)[None, :, None, None], canvas)
        # the canvas is laid out (B, H, W, C) in memory already: by default the convolutions run
        # channels-last without a copy (`tools/bench_train.py --compare-bev-layout` times both); the
        # head hands back NCHW maps
        layout = torch.channels_last if self.bev_channels_last else torch.contiguous_format
        bev = self.neck(self.backbone(canvas.contiguous(memory_format=layout)))
        return LidarOutputs(bev, count.view(b, h, w), mean_z.view(b, h, w), mask, ground)
