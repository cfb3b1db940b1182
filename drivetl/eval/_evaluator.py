"""`DetectionEvaluator`: accumulate frames (on one or several processes), then compute AP/APH.

Rules, per frame and class (documented here once; tests hold them):

- Matching: predictions are taken by descending score and each takes the unmatched ground truth
  it overlaps most (IoU >= the class threshold, or centre distance <= the class threshold in
  metres). This is the score-first greedy matcher (COCO's, and Waymo's TYPE_SCORE_FIRST; Waymo's
  default is Hungarian matching per score cutoff, which can differ when boxes crowd).
- Difficulty: a ground-truth box with > 5 LiDAR points (`level1_min_points`) is LEVEL_1, with
  1..5 points LEVEL_2; a label's own difficulty 2 also makes it LEVEL_2; unknown points (-1) keep
  the label's difficulty (LEVEL_1 when unknown). Boxes with 0 points are ignored by default.
  LEVEL_1 counts LEVEL_1 ground truth; LEVEL_2 counts both. Ground truth a level does not count is
  *ignored*: a prediction matched to it is neither a true nor a false positive.
- Range bands use the BEV range sqrt(x^2 + y^2) of box centres from the vehicle origin. As with
  Waymo's breakdown filters, a band keeps the ground truth whose own range lies in it and the
  predictions whose own range lies in it, and matches them there. So a prediction just inside a band
  edge whose object lies just outside counts as a false positive in its band (and the object as
  missed in the other); the "all" band has no such edge effect.
- Duplicate frames (same `key`, e.g. the padding of a distributed sampler) are counted once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivetl.data.records import Boxes
from drivetl.eval._ap import average_precision, pr_curve
from drivetl.eval._config import LEVELS, Detections, EvalConfig
from drivetl.eval._iou import box_iou
from drivetl.eval._matching import TRUE_POSITIVE, centre_distance, greedy_match, heading_accuracy
from drivetl.eval._result import DetectionResult, MetricEntry


@dataclass(frozen=True, eq=False)
class _FrameState:
    """Matched predictions of one frame, flattened over entries (class, band, level).

    entry: (K,) int32 entry index; score: (K,) float64; tp: (K,) bool; weight: (K,) float64
    heading accuracy (0 for false positives); num_gt: (E,) int64 counted ground truth per entry.
    """

    entry: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    weight: np.ndarray
    num_gt: np.ndarray


def _box_range(boxes: np.ndarray) -> np.ndarray:
    return np.hypot(boxes[:, 0], boxes[:, 1])


class DetectionEvaluator:
    """Accumulates per-frame detection results; `compute()` gives AP/APH per class, band and level.

    Usage::

        ev = DetectionEvaluator(EvalConfig())
        for frame in frames:
            ev.update(Detections(boxes, scores, classes), frame.boxes, key=frame.key)
        ev.sync()            # under torch.distributed: every rank then holds every frame
        result = ev.compute()

    Work happens in `update` (IoU and matching), so distributed ranks share it; `sync` only
    exchanges the small matched records.
    """

    def __init__(self, config: EvalConfig | None = None) -> None:
        self.config = config or EvalConfig()
        self._entries = [
            (c, b, lv) for c in self.config.classes for b in self.config.bands for lv in LEVELS
        ]
        self._frames: dict[Any, _FrameState] = {}
        self._counter = 0

    def __len__(self) -> int:
        """Frames accumulated (after `sync`, on all ranks)."""
        return len(self._frames)

    def reset(self) -> None:
        self._frames.clear()
        self._counter = 0

    def _levels(self, gt: Boxes) -> np.ndarray:
        """Difficulty per ground-truth box: 1, 2, or 0 for ignored (no points)."""
        n = gt.num_points.astype(np.int64)
        label = gt.difficulty.astype(np.int64)
        level = np.where(label == 2, 2, 1)
        level = np.where((n >= 0) & (n < self.config.level1_min_points), 2, level)
        empty = n == 0
        return np.where(empty, 0 if self.config.ignore_empty_gt else 2, level)

    def update(self, predictions: Detections, ground_truth: Boxes, key: Any = None) -> None:
        """Add one frame.

        predictions: the frame's `Detections` (vehicle frame). ground_truth: the frame's `Boxes`
        with `num_points` filled (-1 means unknown: the label's difficulty is used). key: a
        hashable frame identity (e.g. `FrameKey`); frames seen twice under the same key count once.
        """
        if not isinstance(predictions, Detections):
            raise TypeError(f"predictions must be Detections, got {type(predictions).__name__}")
        if not isinstance(ground_truth, Boxes):
            raise TypeError(
                f"ground_truth must be drivetl.data.records.Boxes, got {type(ground_truth).__name__}"
            )
        cfg = self.config
        bands = cfg.band_limits()
        gt_level_all = self._levels(ground_truth)
        pred_cls, gt_cls = np.asarray(predictions.classes, object), np.asarray(ground_truth.classes, object)
        entry_ids, scores, tps, weights = [], [], [], []
        num_gt = np.zeros(len(self._entries), np.int64)
        e = 0
        for cls in cfg.classes:
            pm = np.flatnonzero(pred_cls == cls) if len(predictions) else np.zeros(0, np.int64)
            gm = np.flatnonzero(gt_cls == cls) if len(ground_truth) else np.zeros(0, np.int64)
            block = len(bands) * len(LEVELS)
            if pm.size == 0 and gm.size == 0:
                e += block
                continue
            order = pm[np.argsort(-predictions.scores[pm], kind="stable")]
            pb, ps = predictions.boxes[order], predictions.scores[order]
            gb, glevel = ground_truth.boxes[gm], gt_level_all[gm]
            if cfg.matcher == "iou":
                sim, thr = box_iou(pb, gb, cfg.iou_type), cfg.threshold(cls)
            else:
                sim, thr = -centre_distance(pb, gb), -cfg.threshold(cls)
            p_range, g_range = _box_range(pb), _box_range(gb)
            for lo, hi in bands:
                pin = np.flatnonzero((p_range >= lo) & (p_range < hi))
                gin = np.flatnonzero((g_range >= lo) & (g_range < hi))
                sub = sim[np.ix_(pin, gin)]
                for li in range(len(LEVELS)):
                    ignore = (glevel[gin] == 0) | (glevel[gin] > li + 1)
                    status, match = greedy_match(sub, thr, ignore)
                    keep = status >= 0
                    tp = status[keep] == TRUE_POSITIVE
                    w = np.zeros(tp.size)
                    hit = match[keep][tp]
                    w[tp] = heading_accuracy(pb[pin[keep][tp], 6], gb[gin[hit], 6])
                    entry_ids.append(np.full(tp.size, e, np.int32))
                    scores.append(ps[pin[keep]])
                    tps.append(tp)
                    weights.append(w)
                    num_gt[e] = int((~ignore).sum())
                    e += 1
        cat = np.concatenate
        state = _FrameState(
            entry=cat(entry_ids) if entry_ids else np.zeros(0, np.int32),
            score=cat(scores) if scores else np.zeros(0),
            tp=cat(tps) if tps else np.zeros(0, bool),
            weight=cat(weights) if weights else np.zeros(0),
            num_gt=num_gt,
        )
        frame_id = ("key", str(key)) if key is not None else ("anon", _rank(), self._counter)
        self._counter += 1
        self._frames.setdefault(frame_id, state)

    def sync(self) -> None:
        """Gather every rank's frames onto every rank (torch.distributed); a no-op without it.

        Idempotent: frames are identified (by key, or by rank and arrival), so gathering twice, or
        a frame evaluated on two ranks under the same key, counts it once. Every rank must call it.
        """
        dist = _distributed()
        if dist is None or dist.get_world_size() == 1:
            return
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, list(self._frames.items()))
        merged: dict[Any, _FrameState] = {}
        for items in gathered:
            for frame_id, state in items:
                merged.setdefault(frame_id, state)
        self._frames = dict(sorted(merged.items(), key=lambda kv: repr(kv[0])))

    def compute(self) -> DetectionResult:
        """AP and APH (and curves, counts) for every (class, band, level) over the frames so far."""
        frames = list(self._frames.values())
        n_entries = len(self._entries)
        if frames:
            entry = np.concatenate([f.entry for f in frames])
            score = np.concatenate([f.score for f in frames])
            tp = np.concatenate([f.tp for f in frames])
            weight = np.concatenate([f.weight for f in frames])
            num_gt = np.sum([f.num_gt for f in frames], axis=0)
        else:
            entry, score, tp, weight = np.zeros(0, np.int32), np.zeros(0), np.zeros(0, bool), np.zeros(0)
            num_gt = np.zeros(n_entries, np.int64)
        order = np.argsort(entry, kind="stable")
        bounds = np.searchsorted(entry[order], np.arange(n_entries + 1))
        entries: dict[tuple[str, str, str], MetricEntry] = {}
        for i, (cls, band, level) in enumerate(self._entries):
            idx = order[bounds[i]:bounds[i + 1]]
            n = int(num_gt[i])
            curve = pr_curve(score[idx], tp[idx], weight[idx], n)
            entries[(cls, band, level)] = MetricEntry(
                cls=cls, band=band, level=level,
                ap=average_precision(curve, n, self.config.recall_points),
                aph=average_precision(curve, n, self.config.recall_points, heading=True),
                num_gt=n, num_pred=int(idx.size), num_tp=int(tp[idx].sum()), curve=curve,
            )
        return DetectionResult(config=self.config, num_frames=len(frames), entries=entries)


def _distributed() -> Any:
    """`torch.distributed` when a process group is initialized, else None (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return None
    return dist


def _rank() -> int:
    dist = _distributed()
    return 0 if dist is None else int(dist.get_rank())
