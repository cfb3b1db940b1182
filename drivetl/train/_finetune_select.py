"""Checkpoint selection without test labels, and pseudo-labels for self-training.

Two selection criteria (the run declares one; both are always logged):

- ``val/ap`` (max): mean AP over the classes with ground truth, LEVEL_2, all ranges, on the small
  labeled validation split the data module declares (`drivetl.eval.DetectionEvaluator`; centre
  distance 2 m by default, or Waymo IoU thresholds). Needs labels on the validation frames only.
  Scored as `drivetl evaluate` scores its default region: only boxes whose centre lies in the
  model's BEV range count, and an object with no point of the frame inside its box is left out
  (its points are counted in the frame the model saw).
- ``val/entropy`` (min): label-free; the mean binary entropy of the `top_k` highest heatmap peaks
  per frame. A model that has adapted to the target rig fires confidently on objects and stays
  quiet elsewhere; one that has not is unsure everywhere. It is a proxy: a model can be confidently
  wrong, so prefer ``val/ap`` whenever even a few validation frames can be labeled.

``val/recall`` (BEV-centre recall at `recall_distance`, `drivetl.train.metrics`) is logged beside them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from drivetl.data.canonicalize import points_in_boxes
from drivetl.data.collate import Batch
from drivetl.data.records import Boxes
from drivetl.eval import DetectionEvaluator, EvalConfig, in_region
from drivetl.eval import Detections as EvalDetections
from drivetl.train.metrics import centre_matches

__all__ = ["ValidationScores", "heatmap_entropy", "pseudo_label_batch"]


def heatmap_entropy(heatmap: torch.Tensor, top_k: int = 50) -> torch.Tensor:
    """(B,) mean binary entropy (nats) of the `top_k` highest local maxima of (B, K, H, W) logits."""
    p = heatmap.float().sigmoid()
    peaks = p * (p == F.max_pool2d(p, 3, 1, 1))
    top = peaks.flatten(1).topk(min(top_k, peaks[0].numel()), dim=1).values.clamp(1e-6, 1 - 1e-6)
    return -(top * top.log() + (1 - top) * (1 - top).log()).mean(1)


class ValidationScores:
    """Accumulates validation frames; `compute()` gives val/ap, val/recall, val/entropy (NaN: undefined)."""

    def __init__(
        self,
        classes: list[str],
        matcher: str = "distance",
        recall_distance: float = 2.0,
        score_threshold: float = 0.3,
    ):
        self.classes = list(classes)
        known = {"vehicle": 0.7, "pedestrian": 0.5, "cyclist": 0.5, "sign": 0.5}
        self.config = EvalConfig(
            classes=tuple(self.classes),
            matcher=matcher,
            iou_thresholds={c: known.get(c, 0.5) for c in self.classes},
            distance_thresholds={c: 2.0 for c in self.classes},
        )
        self.recall_distance = recall_distance
        self.score_threshold = score_threshold
        self.reset()

    def reset(self) -> None:
        self.evaluator = DetectionEvaluator(self.config)
        self.matched = self.ground_truth = 0
        self.entropy_sum = 0.0
        self.frames = 0

    @torch.no_grad()
    def update(self, outputs, batch: Batch) -> None:
        dets = outputs.detections()
        gts = [batch.frame_boxes(i) for i in range(batch.batch_size)]
        m = centre_matches(
            dets,
            [g[0] for g in gts],
            [g[1] for g in gts],
            distance=self.recall_distance,
            score_threshold=self.score_threshold,
        )
        self.matched += m.matched
        self.ground_truth += m.ground_truth
        ent = heatmap_entropy(outputs.heatmap)
        self.entropy_sum += float(ent.sum())
        self.frames += int(ent.shape[0])
        names = list(batch.classes)
        region = outputs.geometry.bounds
        for i, (det, (boxes, labels)) in enumerate(zip(dets, gts, strict=True)):
            pred_boxes = det.boxes.double().cpu().numpy()
            seen = in_region(pred_boxes, region)
            pred = EvalDetections(
                pred_boxes[seen],
                det.scores.double().cpu().numpy()[seen],
                tuple(self.classes[int(j)] for j, k in zip(det.labels.cpu(), seen, strict=True) if k),
            )
            gt_boxes = boxes.double().cpu().numpy()
            inside = in_region(gt_boxes, region)
            points = batch.points[int(batch.offsets[i]) : int(batch.offsets[i + 1]), :3].cpu().numpy()
            counts = points_in_boxes(points, gt_boxes[inside]).sum(1).astype(np.int32)
            gt = Boxes(
                gt_boxes[inside],
                tuple(names[int(j)] for j, k in zip(labels.cpu(), inside, strict=True) if k),
                num_points=counts,
            )
            self.evaluator.update(pred, gt, key=batch.keys[i])

    def compute(self) -> dict[str, float]:
        self.evaluator.sync()
        result = self.evaluator.compute()
        ap = result.mean("ap")  # NaN when no validation frame has ground truth
        counts = torch.tensor(
            [self.matched, self.ground_truth, self.entropy_sum, self.frames], dtype=torch.float64
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
            counts = counts.to(device)
            torch.distributed.all_reduce(counts)
            counts = counts.cpu()
        matched, total, ent, frames = counts.tolist()
        return {
            "val/ap": float(ap),
            "val/recall": matched / total if total else math.nan,
            "val/entropy": ent / frames if frames else math.nan,
        }


@torch.no_grad()
def pseudo_label_batch(batch: Batch, outputs, threshold: float) -> Batch:
    """`batch` with its boxes replaced by the decoded detections scoring >= `threshold` (teacher outputs)."""
    dets = outputs.detections(score_threshold=threshold)
    boxes = [d.boxes.float() for d in dets]
    labels = [d.labels.long() for d in dets]
    offsets = np.cumsum([0] + [len(b) for b in boxes])
    device = batch.boxes.device
    return dataclasses.replace(
        batch,
        boxes=torch.cat(boxes).reshape(-1, 7).to(device) if boxes else batch.boxes[:0],
        box_classes=torch.cat(labels).to(device) if labels else batch.box_classes[:0],
        box_offsets=torch.as_tensor(offsets, dtype=torch.int64, device=device),
    )
