"""CenterPoint target assignment: gaussian class heatmaps and regression targets at box centres."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from drivetl.models.heads._coding import BoxCoding

__all__ = ["BEVGeometry", "HeadTargets", "assign_targets", "gaussian_radius"]

#: regression channels of the head, in order
REGRESSION = ("dx", "dy", "z", "log_l", "log_w", "log_h", "sin", "cos")


@dataclass(frozen=True)
class BEVGeometry:
    """Where a BEV map lies: cell (iy, ix) spans x in [x_min + ix * cell_x, ...), y likewise (metres)."""

    x_min: float
    y_min: float
    cell_x: float
    cell_y: float
    height: int
    width: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) metres the map covers."""
        return (
            self.x_min,
            self.y_min,
            self.x_min + self.width * self.cell_x,
            self.y_min + self.height * self.cell_y,
        )


@dataclass(frozen=True)
class HeadTargets:
    """heatmap: (B, K, H, W) in [0, 1], exactly 1 at box centres. index: (B, M) int64 flat cell index
    ``iy * W + ix``; mask: (B, M) bool (real entries); regression: (B, M, C) targets of the head's
    `BoxCoding` (C = 8 `REGRESSION` channels, 9 with a direction classifier); labels: (B, M) int64
    class index."""

    heatmap: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor
    regression: torch.Tensor
    labels: torch.Tensor


def gaussian_radius(
    length_cells: torch.Tensor, width_cells: torch.Tensor, min_overlap: float = 0.1
) -> torch.Tensor:
    """CornerNet's radius: the largest centre shift keeping IoU >= min_overlap, the min of its 3 cases."""
    h, w, o = length_cells, width_cells, min_overlap
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt((b1 * b1 - 4 * c1).clamp(min=0))) / 2
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    r2 = (b2 + torch.sqrt((b2 * b2 - 16 * c2).clamp(min=0))) / 2
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 * b3 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def assign_targets(
    boxes: torch.Tensor,
    box_offsets: torch.Tensor,
    box_classes: torch.Tensor,
    num_classes: int,
    geometry: BEVGeometry,
    *,
    max_objects: int = 500,
    min_radius: int = 2,
    min_overlap: float = 0.1,
    coding: BoxCoding | None = None,
) -> HeadTargets:
    """Targets for a batch: boxes (M, 7) vehicle frame, box_offsets (B + 1,), box_classes (M,) int64;
    `coding` the head's box encoding (None: plain sizes, sin/cos heading).

    Boxes whose centre lies outside the map are ignored; at most `max_objects` per frame are kept.
    """
    g = geometry
    dev = boxes.device
    b = int(box_offsets.shape[0]) - 1
    h, w = g.height, g.width
    heat = torch.zeros(b * num_classes * h * w, device=dev)
    frame = torch.repeat_interleave(torch.arange(b, device=dev), box_offsets.diff())
    fx = (boxes[:, 0] - g.x_min) / g.cell_x
    fy = (boxes[:, 1] - g.y_min) / g.cell_y
    ix, iy = torch.floor(fx).long(), torch.floor(fy).long()
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h) & (box_classes >= 0) & (box_classes < num_classes)
    boxes, frame, box_classes = boxes[inside], frame[inside], box_classes[inside]
    fx, fy, ix, iy = fx[inside], fy[inside], ix[inside], iy[inside]

    if boxes.shape[0]:
        radius = gaussian_radius(boxes[:, 3] / g.cell_x, boxes[:, 4] / g.cell_y, min_overlap)
        radius = radius.floor().long().clamp(min=min_radius)
        rmax = int(radius.max())
        d = torch.arange(-rmax, rmax + 1, device=dev)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        dy, dx = dy.reshape(-1), dx.reshape(-1)
        sigma = (2 * radius.float() + 1) / 6
        val = torch.exp(-(dx[None] ** 2 + dy[None] ** 2).float() / (2 * sigma[:, None] ** 2))
        px, py = ix[:, None] + dx[None], iy[:, None] + dy[None]
        ok = (dx[None].abs() <= radius[:, None]) & (dy[None].abs() <= radius[:, None])
        ok &= (px >= 0) & (px < w) & (py >= 0) & (py < h)
        flat = ((frame[:, None] * num_classes + box_classes[:, None]) * h + py) * w + px
        heat.scatter_reduce_(0, flat[ok], val[ok], "amax")

    index = torch.zeros(b, max_objects, dtype=torch.int64, device=dev)
    mask = torch.zeros(b, max_objects, dtype=torch.bool, device=dev)
    coding = coding or BoxCoding()
    reg = torch.zeros(b, max_objects, coding.channels, device=dev)
    labels = torch.zeros(b, max_objects, dtype=torch.int64, device=dev)
    target = coding.encode(boxes, box_classes, torch.stack([fx - ix, fy - iy], 1))
    for i in range(b):
        sel = (frame == i).nonzero().squeeze(1)[:max_objects]
        k = sel.shape[0]
        index[i, :k] = iy[sel] * w + ix[sel]
        mask[i, :k] = True
        reg[i, :k] = target[sel]
        labels[i, :k] = box_classes[sel]
    return HeadTargets(heat.view(b, num_classes, h, w), index, mask, reg, labels)
