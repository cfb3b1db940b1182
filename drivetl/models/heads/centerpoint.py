"""CenterPoint-style detection head: class heatmaps + per-cell box regression, and decoding to boxes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from drivetl.models._blocks import ConvBNReLU
from drivetl.models.heads._rotated_iou import rotated_nms
from drivetl.models.heads._targets import REGRESSION, BEVGeometry

__all__ = ["CenterHead", "Detections", "decode"]


class CenterHead(nn.Module):
    """forward: (B, in_channels, H, W) -> (heatmap logits (B, K, H, W), regression (B, 8, H, W)).

    Regression channels (`REGRESSION`): centre offset within the cell (dx, dy in cells), z (metres),
    log length/width/height (log metres), sin and cos of the heading.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 64, prior: float = 0.1):
        super().__init__()
        self.shared = ConvBNReLU(in_channels, channels, 3)
        self.heatmap = nn.Sequential(ConvBNReLU(channels, channels, 3), nn.Conv2d(channels, num_classes, 1))
        self.regression = nn.Sequential(
            ConvBNReLU(channels, channels, 3), nn.Conv2d(channels, len(REGRESSION), 1)
        )
        nn.init.constant_(self.heatmap[-1].bias, -float(torch.log(torch.tensor((1 - prior) / prior))))
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmap logits, regression) of a BEV feature map (shapes: the class docstring)."""
        y = self.shared(x)
        return self.heatmap(y), self.regression(y)


@dataclass(frozen=True)
class Detections:
    """Decoded boxes of one frame: boxes (D, 7) vehicle frame, scores (D,), labels (D,) int64 class index."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def decode(
    heatmap: torch.Tensor,
    regression: torch.Tensor,
    geometry: BEVGeometry,
    *,
    top_k: int = 200,
    score_threshold: float = 0.1,
    nms_iou: float = 0.2,
    max_detections: int = 100,
) -> list[Detections]:
    """Heatmap logits (B, K, H, W) + regression (B, 8, H, W) -> one `Detections` per frame.

    Peaks are local maxima of the class heatmaps (3x3), the `top_k` best are turned into boxes, those
    under `score_threshold` dropped, then rotated-box NMS per class keeps at most `max_detections`.
    """
    b, k, h, w = heatmap.shape
    heat = heatmap.float().sigmoid()
    peaks = heat == F.max_pool2d(heat, 3, 1, 1)
    heat = heat * peaks
    scores, flat = heat.view(b, -1).topk(min(top_k, k * h * w))
    labels = flat // (h * w)
    cell = flat % (h * w)
    iy, ix = (cell // w).float(), (cell % w).float()
    reg = (
        regression.float()
        .view(b, len(REGRESSION), h * w)
        .gather(2, cell[:, None].expand(b, len(REGRESSION), -1))
    )
    x = (ix + reg[:, 0]) * geometry.cell_x + geometry.x_min
    y = (iy + reg[:, 1]) * geometry.cell_y + geometry.y_min
    size = reg[:, 3:6].clamp(max=6.0).exp()
    heading = torch.atan2(reg[:, 6], reg[:, 7])
    boxes = torch.cat([x[:, None], y[:, None], reg[:, 2:3], size, heading[:, None]], 1).transpose(1, 2)
    out = []
    for i in range(b):
        keep = scores[i] >= score_threshold
        bx, sc, lb = boxes[i][keep], scores[i][keep], labels[i][keep]
        kept = []
        for c in lb.unique():
            idx = (lb == c).nonzero().squeeze(1)
            kept.append(idx[rotated_nms(bx[idx], sc[idx], nms_iou)])
        sel = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.int64, device=bx.device)
        sel = sel[sc[sel].argsort(descending=True)][:max_detections]
        out.append(Detections(bx[sel], sc[sel], lb[sel]))
    return out
