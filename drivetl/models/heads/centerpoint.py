"""CenterPoint-style detection head: class heatmaps + per-cell box regression, and decoding to boxes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from drivetl.models._blocks import ConvBNReLU
from drivetl.models.heads._coding import BoxCoding
from drivetl.models.heads._rotated_iou import rotated_nms
from drivetl.models.heads._targets import BEVGeometry

__all__ = ["CenterHead", "Detections", "decode"]


class CenterHead(nn.Module):
    """forward: (B, in_channels, H, W) -> (heatmap logits (B, K, H, W), regression (B, C, H, W)).

    Regression channels (`REGRESSION`, see `BoxCoding`): centre offset within the cell (dx, dy in
    cells), z (metres), log length/width/height (log metres, over the class's prior size with
    `size_priors`), sin and cos of the heading (of twice the heading, plus a ninth direction-logit
    channel, with `direction`).

    size_priors: (K, 3) metres per class, or None. direction: add the direction classifier.
    iou_score: add the IoU channel that rectifies scores with exponent `iou_alpha` (see `BoxCoding`).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 64,
        prior: float = 0.1,
        size_priors: list[list[float]] | None = None,
        direction: bool = False,
        iou_score: bool = False,
        iou_alpha: float = 0.5,
    ):
        super().__init__()
        self.direction = bool(direction)
        self.iou_score, self.iou_alpha = bool(iou_score), float(iou_alpha)
        if not 0.0 <= self.iou_alpha <= 1.0:
            raise ValueError(f"iou_alpha must lie in [0, 1], got {iou_alpha}")
        n_reg = BoxCoding(direction=self.direction, iou=self.iou_score).channels
        self.shared = ConvBNReLU(in_channels, channels, 3)
        self.heatmap = nn.Sequential(ConvBNReLU(channels, channels, 3), nn.Conv2d(channels, num_classes, 1))
        self.regression = nn.Sequential(ConvBNReLU(channels, channels, 3), nn.Conv2d(channels, n_reg, 1))
        nn.init.constant_(self.heatmap[-1].bias, -float(torch.log(torch.tensor((1 - prior) / prior))))
        self.num_classes = num_classes
        self.log_priors: torch.Tensor | None
        if size_priors is not None:
            t = torch.tensor(size_priors, dtype=torch.float32)
            if t.shape != (num_classes, 3):
                raise ValueError(f"size_priors must be {num_classes} x 3 metres, got {tuple(t.shape)}")
            # not persistent: the priors follow the class list of the config, not the state dict
            self.register_buffer("log_priors", t.log(), persistent=False)
        else:
            self.log_priors = None

    @property
    def coding(self) -> BoxCoding:
        """How the regression channels encode a box (targets, loss and decoding follow it)."""
        return BoxCoding(self.log_priors, self.direction, self.iou_score, self.iou_alpha)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmap logits, regression) of a BEV feature map (shapes: the class docstring), in the
        default (NCHW) memory layout whatever the layout of `x`."""
        y = self.shared(x)
        return self.heatmap(y).contiguous(), self.regression(y).contiguous()


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
    coding: BoxCoding | None = None,
) -> list[Detections]:
    """Heatmap logits (B, K, H, W) + regression (B, C, H, W) -> one `Detections` per frame; `coding`
    the head's box encoding (`DetectorOutputs.coding`; None: plain sizes, sin/cos heading).

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
    coding = coding or BoxCoding()
    c = regression.shape[1]
    if c != coding.channels:
        raise ValueError(f"regression has {c} channels, the box coding {coding.channels}")
    reg = regression.float().view(b, c, h * w).gather(2, cell[:, None].expand(b, c, -1))
    boxes = coding.boxes(reg, labels, cell, geometry)
    scores = coding.rectify(scores, reg)
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
