"""How the head's regression channels encode a box, both ways (targets <- boxes, boxes <- outputs).

Channels 0..7 are always ``dx, dy, z, log_l, log_w, log_h, h0, h1`` (`REGRESSION`); what the size and
heading channels mean depends on two switches:

- size priors (PointPillars' and SECOND's per-class anchor sizes): ``log_l, log_w, log_h`` are the log of
  the size over the class's prior size (metres), so a fresh head already predicts a car-sized box for a
  car and a person-sized one for a pedestrian, and the regression only learns the residual;
  without priors they are the log of the size itself.
- direction classifier (SECOND, PointPillars): ``h0, h1`` are ``sin 2θ, cos 2θ`` (the box's axis,
  the same for θ and θ + π, so the regression never averages a front and a back) and a ninth channel
  is a direction logit: positive when the front points to ``cos(θ - DIRECTION_AXIS) > 0``. Decoding
  takes the axis from the regression and the front from the logit. Without it ``h0, h1`` are
  ``sin θ, cos θ``. `DIRECTION_AXIS` is 45 degrees so that the classes' boundary (headings of 135 and
  -45 degrees) lies away from the directions of traffic along and across a road.
- IoU-aware score (CIA-SSD, AFDet, CenterPoint++): a last channel predicts (as a logit) the 3D IoU of
  the decoded box with the object it stands for; decoding ranks boxes by
  ``heatmap^(1 - alpha) * iou^alpha`` so that, of two boxes on one object, the tighter one scores
  higher. Its target is computed in the loss from the prediction itself (`encode` leaves it 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CLASS_SIZES", "DIRECTION_AXIS", "BoxCoding", "prior_sizes"]

#: headings whose front is "positive" for the direction classifier: cos(heading - DIRECTION_AXIS) > 0
DIRECTION_AXIS = math.pi / 4
#: typical box sizes (length, width, height; metres) of the canonical classes, the default size priors
CLASS_SIZES: Mapping[str, tuple[float, float, float]] = {
    "vehicle": (4.7, 2.0, 1.7),
    "pedestrian": (0.7, 0.7, 1.75),
    "cyclist": (1.8, 0.7, 1.75),
    "sign": (0.1, 0.8, 0.8),
}


def prior_sizes(
    classes: Sequence[str], priors: bool | Mapping[str, Sequence[float]]
) -> list[list[float]] | None:
    """Per-class (l, w, h) priors in class order: None when `priors` is False; True takes `CLASS_SIZES`
    (1 m cubes for other names); a mapping gives sizes by class name (missing names as with True)."""
    if priors is False or priors is None:
        return None
    table = dict(CLASS_SIZES)
    if isinstance(priors, Mapping):
        table.update({str(k): tuple(float(x) for x in v) for k, v in priors.items()})
    out = []
    for c in classes:
        size = [float(x) for x in table.get(c, (1.0, 1.0, 1.0))]
        if len(size) != 3 or min(size) <= 0:
            raise ValueError(f"size prior of {c!r} must be 3 positive metres (l, w, h), got {size}")
        out.append(size)
    return out


@dataclass(frozen=True, eq=False)
class BoxCoding:
    """The head's box encoding. log_priors: (K, 3) log metres per class, or None; direction: whether
    the heading channels are the axis (sin 2θ, cos 2θ) plus a direction logit channel; iou: a last
    channel predicts the box's IoU, which rectifies the score with exponent `iou_alpha`."""

    log_priors: torch.Tensor | None = None
    direction: bool = False
    iou: bool = False
    iou_alpha: float = 0.5

    @property
    def channels(self) -> int:
        """Regression channels: 8, plus the direction logit, plus the IoU logit."""
        return 8 + int(self.direction) + int(self.iou)

    @property
    def iou_channel(self) -> int | None:
        """Index of the IoU logit channel (None without it)."""
        return self.channels - 1 if self.iou else None

    @property
    def names(self) -> list[str]:
        """What each regression channel holds, in order."""
        size = ["log_l_over_prior", "log_w_over_prior", "log_h_over_prior"]
        if self.log_priors is None:
            size = ["log_l", "log_w", "log_h"]
        heading = ["sin_2heading", "cos_2heading", "front_logit"] if self.direction else ["sin", "cos"]
        return ["dx", "dy", "z", *size, *heading] + (["iou_logit"] if self.iou else [])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: size priors (K x 3 metres, or None), direction, IoU score, channel names."""
        priors = None
        if self.log_priors is not None:
            priors = [[round(float(v), 6) for v in row] for row in self.log_priors.detach().cpu().exp()]
        out = {"size_priors": priors, "direction": self.direction, "channels": self.names}
        if self.iou:
            out |= {"iou": True, "iou_alpha": self.iou_alpha}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> BoxCoding:
        """Inverse of `to_dict`; None or {} is the plain coding (files written before the options)."""
        data = dict(data or {})
        priors = data.get("size_priors")
        log_priors = None
        if priors is not None:
            log_priors = torch.tensor(priors, dtype=torch.float32).reshape(-1, 3).log()
        return cls(
            log_priors,
            bool(data.get("direction", False)),
            bool(data.get("iou", False)),
            float(data.get("iou_alpha", 0.5)),
        )

    def encode(self, boxes: torch.Tensor, classes: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Targets (M, channels) of boxes (M, 7) of class index `classes` (M,); offset (M, 2) the centre's
        position within its cell (cells). The direction target is 0 or 1; the IoU target is left 0
        (the loss computes it from the prediction)."""
        size = boxes[:, 3:6].clamp(min=1e-3).log()
        if self.log_priors is not None:
            size = size - self.log_priors.to(size)[classes]
        h = boxes[:, 6:7]
        if self.direction:
            front = (torch.cos(h - DIRECTION_AXIS) > 0).to(boxes.dtype)
            parts = [offset, boxes[:, 2:3], size, torch.sin(2 * h), torch.cos(2 * h), front]
        else:
            parts = [offset, boxes[:, 2:3], size, torch.sin(h), torch.cos(h)]
        if self.iou:
            parts.append(torch.zeros_like(h))
        return torch.cat(parts, 1)

    def decode(self, reg: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """reg (B, channels, N) at N cells, labels (B, N) their classes -> sizes (B, 3, N) metres and
        headings (B, N) radians in (-pi, pi]."""
        log_size = reg[:, 3:6]
        if self.log_priors is not None:
            log_size = log_size + self.log_priors.to(reg)[labels].transpose(1, 2)
        size = log_size.clamp(max=6.0).exp()
        if not self.direction:
            return size, torch.atan2(reg[:, 6], reg[:, 7])
        axis = 0.5 * torch.atan2(reg[:, 6], reg[:, 7])  # in (-pi/2, pi/2]
        points_front = torch.cos(axis - DIRECTION_AXIS) > 0
        heading = torch.where(points_front == (reg[:, 8] > 0), axis, axis + math.pi)
        heading = torch.remainder(heading + math.pi, 2 * math.pi) - math.pi
        return size, torch.where(heading <= -math.pi, heading + 2 * math.pi, heading)

    def boxes(self, reg: torch.Tensor, labels: torch.Tensor, cells: torch.Tensor, geometry) -> torch.Tensor:
        """Boxes (B, N, 7) in the vehicle frame of reg (B, channels, N) at flat cell indices `cells`
        (B, N) (``iy * width + ix`` of `geometry`, a `BEVGeometry`), labels (B, N) their classes."""
        ix = (cells % geometry.width).to(reg.dtype)
        iy = torch.div(cells, geometry.width, rounding_mode="floor").to(reg.dtype)
        x = (ix + reg[:, 0]) * geometry.cell_x + geometry.x_min
        y = (iy + reg[:, 1]) * geometry.cell_y + geometry.y_min
        size, heading = self.decode(reg, labels)
        return torch.cat([x[:, None], y[:, None], reg[:, 2:3], size, heading[:, None]], 1).transpose(1, 2)

    def rectify(self, scores: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
        """Scores (B, N) of heatmap peaks rectified by the predicted IoU of reg (B, channels, N):
        ``score^(1 - alpha) * iou^alpha`` (the scores unchanged without the IoU channel)."""
        if not self.iou:
            return scores
        iou = reg[:, self.channels - 1].sigmoid()
        a = float(self.iou_alpha)
        return scores.clamp(min=0).pow(1 - a) * iou.pow(a)
