"""Dynamic pillarization of a batch through `drivetl.ops`, and the pillar feature net (PointNet-style)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from drivetl.ops import VoxelGrid, scatter_reduce, voxelize

__all__ = [
    "HEIGHT_STATS",
    "Pillars",
    "PillarFeatureNet",
    "height_stats",
    "ground_relative",
    "local_ground",
    "pillarize",
]

#: the per-pillar channels `height_stats` returns, in order
HEIGHT_STATS = ("z_max", "z_min", "log1p_count")
#: what `local_ground` gives a cell without pillars before its min-pool (metres, above any grid)
NO_GROUND = 1.0e4


@dataclass(frozen=True)
class Pillars:
    """The non-empty pillars of a batch.

    point_pillar: (N,) int64 pillar index of every point, -1 for points outside the grid.
    coords: (P, 3) int64 ``(batch, iy, ix)`` of every pillar.
    num_pillars: P.
    """

    point_pillar: torch.Tensor
    coords: torch.Tensor
    num_pillars: int


def pillarize(points: torch.Tensor, offsets: torch.Tensor, grid: VoxelGrid) -> Pillars:
    """Group points (N, C>=3 float32, vehicle frame, metres) into the pillars of `grid` (one z cell)."""
    out = voxelize(points[:, :3].contiguous(), offsets, grid, reduce=None, backend="auto")
    coords = out.coords.long()  # (P, 4) batch, z, y, x
    return Pillars(out.point_to_voxel.long(), coords[:, [0, 2, 3]], int(coords.shape[0]))


def _segment(values: torch.Tensor, index: torch.Tensor, n: int, reduce: str) -> torch.Tensor:
    return scatter_reduce(values, index, n, reduce)


class PillarFeatureNet(nn.Module):
    """Point features -> one feature vector per pillar.

    Point features: x, y, z, intensity (+ elongation when `use_elongation`), offsets of the point to its
    pillar's point mean (3) and to the pillar's centre (2): ``in = 4 (+1) + 5``. Each layer is
    Linear -> BatchNorm -> ReLU; between layers the pillar max is concatenated back to every point;
    the output is the max over the pillar's points (scatter max).
    """

    def __init__(self, grid: VoxelGrid, channels: tuple[int, ...] = (32,), use_elongation: bool = False):
        super().__init__()
        self.grid = grid
        self.use_elongation = use_elongation
        in_ch = 4 + int(use_elongation) + 5
        layers = []
        for i, c in enumerate(channels):
            layers.append(
                nn.ModuleDict(
                    {
                        "linear": nn.Linear(in_ch if i == 0 else 2 * channels[i - 1], c, bias=False),
                        "norm": nn.BatchNorm1d(c, eps=1e-3, momentum=0.01),
                    }
                )
            )
        self.layers = nn.ModuleList(layers)
        self.out_channels = channels[-1]

    def point_features(
        self, points: torch.Tensor, columns: tuple[str, ...], pillars: Pillars
    ) -> torch.Tensor:
        """(N_kept, F) decorated point features of the points inside the grid."""
        keep = pillars.point_pillar >= 0
        idx = pillars.point_pillar[keep]
        pts = points[keep]
        xyz = pts[:, :3]
        feats = [xyz, pts[:, 3:4]]
        if self.use_elongation:
            if "elongation" in columns:
                feats.append(pts[:, columns.index("elongation")].unsqueeze(1))
            else:
                feats.append(torch.zeros_like(pts[:, :1]))
        mean = _segment(xyz, idx, pillars.num_pillars, "mean")
        feats.append(xyz - mean[idx])
        sx, sy = self.grid.voxel_size[0], self.grid.voxel_size[1]
        x0, y0 = self.grid.point_range[0], self.grid.point_range[1]
        cyx = pillars.coords[idx, 1:].to(xyz.dtype)
        centre = torch.stack([(cyx[:, 1] + 0.5) * sx + x0, (cyx[:, 0] + 0.5) * sy + y0], 1)
        feats.append(xyz[:, :2] - centre)
        return torch.cat(feats, 1)

    def forward(self, points: torch.Tensor, columns: tuple[str, ...], pillars: Pillars) -> torch.Tensor:
        """(P, out_channels) pillar features."""
        idx = pillars.point_pillar[pillars.point_pillar >= 0]
        x = self.point_features(points, columns, pillars)
        pooled = x.new_zeros((pillars.num_pillars, self.out_channels))
        for i, layer in enumerate(self.layers):
            # float32 after each layer: under autocast the linear gives bfloat16, which the compiled
            # segment kernels (float32/float64 only) reject
            x = torch.relu(layer["norm"](layer["linear"](x))).float()
            pooled = _segment(x, idx, pillars.num_pillars, "max")
            if i + 1 < len(self.layers):
                x = torch.cat([x, pooled[idx]], 1)
        return pooled


def height_stats(
    z: torch.Tensor, index: torch.Tensor, num_pillars: int, z_range: tuple[float, float]
) -> torch.Tensor:
    """(P, 3) float32 per pillar: the highest and the lowest point's z (metres) and log(1 + points).

    z: (N,) the z of the points inside the grid, index: (N,) their pillar. The extremes are taken as
    scatter-maxes of ``z - z_min`` and ``z_max - z`` (both >= 0 inside the grid) into zeros, so the same
    code runs in the torch model and in the exported graph (ONNX ``ScatterElements`` max and add).
    """
    lo, hi = float(z_range[0]), float(z_range[1])
    z = z.float()
    zeros = z.new_zeros(num_pillars)
    top = zeros.scatter_reduce(0, index, z - lo, "amax", include_self=True) + lo
    bottom = hi - zeros.scatter_reduce(0, index, hi - z, "amax", include_self=True)
    count = zeros.scatter_add(0, index, torch.ones_like(z))
    return torch.stack([top, bottom, torch.log1p(count)], 1)


def local_ground(
    z_min: torch.Tensor, cell: torch.Tensor, shape: tuple[int, int, int], window: int
) -> torch.Tensor:
    """(B, 1, ny, nx) float32: a local ground height at every pillar cell, the lowest point of the
    pillars within ``window x window`` cells around it (0, the canonical frame's ground, where no
    pillar is that near).

    z_min: (P,) each pillar's lowest point z (`height_stats`; `NO_GROUND` leaves a pillar out);
    cell: (P,) its flat index ``(b * ny + iy) * nx + ix``; shape: ``(B, ny, nx)``. The window
    should reach past an object's footprint to the ground beside it (a min of 3.6 m around a car's
    centre sees the road beside its near side). A min-pool of the negated map, so the exported
    graph computes it with the same ops (ONNX MaxPool)."""
    b, ny, nx = shape
    flat = z_min.new_full((b * ny * nx,), NO_GROUND).index_copy(0, cell, z_min.float())
    low = -F.max_pool2d(-flat.view(b, 1, ny, nx), window, stride=1, padding=window // 2)
    return torch.where(low < NO_GROUND / 2, low, torch.zeros_like(low))


def ground_relative(
    stats: torch.Tensor,
    cell: torch.Tensor,
    shape: tuple[int, int, int],
    window: int,
    stride: int,
    hidden: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heights above the local ground: (stats with z_max and z_min minus their cell's `local_ground`,
    (B, 1, ny / stride, nx / stride) the ground averaged over each output cell).

    stats: (P, 3) `height_stats`; cell, shape, window: as `local_ground`; hidden: (P,) bool pillars
    the ground must not see (masked pretraining cells), or None."""
    z_min = stats[:, 1]
    if hidden is not None:
        z_min = torch.where(hidden, torch.full_like(z_min, NO_GROUND), z_min)
    ground = local_ground(z_min, cell, shape, window)
    under = ground.reshape(-1)[cell].unsqueeze(1)
    stats = torch.cat([stats[:, :2] - under, stats[:, 2:]], 1)
    if stride > 1:
        ground = F.avg_pool2d(ground, stride, stride)
    return stats, ground
