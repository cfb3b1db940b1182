"""Size recalibration of a pretrained head on the labeled target frames (output transformation).

Object size is the largest gap between driving data sets recorded in different countries (Wang et
al., "Train in Germany, Test in the USA: Making 3D Object Detectors Generalize", CVPR 2020): a
detector trained on one draws the source's sizes on the other, and at Waymo's 0.7 IoU for vehicles a
box 10 % too long already misses. Their output transformation moves every predicted size by the
difference of the two domains' mean sizes. With a few labeled target frames that difference need
not be known beforehand: the pretrained model runs over the labeled frames (un-augmented), each
label is paired with the best-scoring detection of its class whose centre lies within `distance`,
and per class and dimension the median of ``log(label size / detected size)`` is the model's size
bias on the target. A head that regresses sizes relative to per-class priors (``size_priors``)
takes the bias into its log priors, so every box of the class is scaled by the ratio from the first
fine-tuning step on, and fine-tuning and checkpoint selection start from the recalibrated model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["MIN_PAIRS", "SizeBias", "SizeBiasCounter"]

#: a class needs this many label-detection pairs before its prior moves
MIN_PAIRS = 5


@dataclass(frozen=True)
class SizeBias:
    """Per class: the median log size ratio label / detection (3,) in (l, w, h) order (None where the
    class has fewer than `MIN_PAIRS` pairs) and the number of pairs."""

    classes: tuple[str, ...]
    log_ratio: tuple[tuple[float, float, float] | None, ...]
    pairs: tuple[int, ...]

    def describe(self) -> str:
        """One line per class: the size factors applied, or why the class was left as it was."""
        lines = []
        for name, ratio, n in zip(self.classes, self.log_ratio, self.pairs, strict=True):
            if ratio is None:
                lines.append(f"{name}: unchanged ({n} pairs, fewer than {MIN_PAIRS})")
            else:
                l, w, h = (math.exp(v) for v in ratio)
                lines.append(f"{name}: length x{l:.3f}, width x{w:.3f}, height x{h:.3f} ({n} pairs)")
        return "; ".join(lines)


class SizeBiasCounter:
    """Accumulates label-detection pairs frame by frame; `compute()` gives the `SizeBias`.

    classes: the head's class names. distance: BEV centre distance (m) within which a detection of
    the label's class may pair with it. score_threshold: detections below it are ignored.
    """

    def __init__(self, classes: Sequence[str], distance: float = 1.0, score_threshold: float = 0.3):
        self.classes = tuple(classes)
        self.distance = float(distance)
        self.score_threshold = float(score_threshold)
        self._ratios: list[list[torch.Tensor]] = [[] for _ in self.classes]

    @torch.no_grad()
    def update(
        self,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
    ) -> None:
        """One frame: detections (D, 7) boxes, (D,) scores, (D,) class indices; labels (M, 7), (M,)."""
        keep = scores >= self.score_threshold
        boxes, scores, labels = boxes[keep].float(), scores[keep].float(), labels[keep]
        gt_boxes = gt_boxes.float().to(boxes.device)
        gt_labels = gt_labels.to(boxes.device)
        if not len(boxes) or not len(gt_boxes):
            return
        dist = torch.cdist(gt_boxes[:, :2], boxes[:, :2])  # (M, D)
        same = gt_labels[:, None] == labels[None, :]
        near = same & (dist <= self.distance)
        # the best-scoring near detection of each label
        ranked = torch.where(near, scores[None, :].expand_as(dist), torch.full_like(dist, -1.0))
        best = ranked.argmax(1)
        found = near.any(1)
        for m in torch.nonzero(found).flatten().tolist():
            d = int(best[m])
            ratio = (gt_boxes[m, 3:6].clamp_min(1e-3) / boxes[d, 3:6].clamp_min(1e-3)).log()
            self._ratios[int(gt_labels[m])].append(ratio.cpu())

    def compute(self) -> SizeBias:
        """The per-class median log ratios (None below `MIN_PAIRS` pairs)."""
        out, pairs = [], []
        for ratios in self._ratios:
            pairs.append(len(ratios))
            if len(ratios) < MIN_PAIRS:
                out.append(None)
                continue
            med = torch.stack(ratios).median(0).values
            out.append(tuple(float(v) for v in med))
        return SizeBias(self.classes, tuple(out), tuple(pairs))
