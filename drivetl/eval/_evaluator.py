"""`DetectionEvaluator`: accumulate frames (on one or several processes), then compute AP/APH.

Rules, per frame and class (documented here once; tests hold them; docs/evaluate.md has the
whole definition and where it follows Waymo's official metrics):

- Matching (`matching`): "score_first": predictions are taken by descending score and each takes
  the unmatched ground truth it overlaps most (IoU >= the class threshold, or centre distance <=
  the class threshold in metres), preferring ground truth the level counts; "hungarian": at each
  score threshold, the predictions at or above it are assigned anew to maximize the summed IoU
  (quantized to 1e-6, as Waymo's op) of pairs that pass the threshold (for the distance matcher,
  of the closeness 1 - distance / (2 x threshold)).
- Difficulty: a ground-truth box with > 5 LiDAR points (`level1_min_points`) is LEVEL_1, with
  1..5 points LEVEL_2; a label's own difficulty 2 also makes it LEVEL_2; unknown points (-1) keep
  the label's difficulty (LEVEL_1 when unknown). Boxes with 0 points follow `empty_gt`.
  LEVEL_1 counts LEVEL_1 ground truth; LEVEL_2 counts both. A prediction matched to ground truth
  a level does not count is neither a true nor a false positive (`harder_matches="ignore"`), or a
  true positive whose object is no false negative when missed (`"true_positive"`, Waymo's op).
- Range bands use the range of box centres from the vehicle origin (`range_type`, BEV or 3D). As
  with Waymo's RANGE breakdown, a band keeps the ground truth whose own range lies in it and the
  predictions whose own range lies in it, and matches them there. So a prediction just inside a band
  edge whose object lies just outside counts as a false positive in its band (and the object as
  missed in the other); the "all" band has no such edge effect.
- APH: each true positive adds its heading accuracy 1 - |dheading| / pi (dheading wrapped to
  [0, pi]) instead of 1 to the precision; the recall is the plain one (Waymo's definition).
- Duplicate frames (same `key`, e.g. the padding of a distributed sampler) are counted once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivetl.data.records import Boxes
from drivetl.eval._ap import (
    PRCurve,
    average_precision,
    counts_curve,
    cutoff_average_precision,
    cutoff_curve,
)
from drivetl.eval._config import LEVELS, Detections, EvalConfig
from drivetl.eval._iou import box_iou
from drivetl.eval._matching import centre_distance, heading_accuracy
from drivetl.eval._result import DetectionResult, MetricEntry
from drivetl.eval._steps import Steps, band_steps

#: Hungarian weights: IoU (or closeness) quantized to this many steps, as Waymo's op does.
_WEIGHT_STEPS = 1_000_000


@dataclass(frozen=True, eq=False)
class _FrameState:
    """One frame's count steps (`drivetl.eval._steps`), flattened over entries (class, band, level).

    entry: (K,) int32 entry index; score: (K,) float64; tp, fp, fn: (K,) int64 count changes;
    heading: (K,) float64 change of the summed heading accuracy; num_gt: (E,) int64 counted
    ground truth per entry (the false negatives with no prediction).
    """

    entry: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    heading: np.ndarray
    num_gt: np.ndarray


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
        return np.where(empty, 2 if self.config.empty_gt == "level_2" else 0, level)

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
        if cfg.empty_gt == "drop" and len(ground_truth):
            ground_truth = ground_truth.select(ground_truth.num_points != 0)
        bands = cfg.band_limits()
        levels = tuple(range(1, len(LEVELS) + 1))
        gt_level_all = self._levels(ground_truth)
        pred_cls, gt_cls = np.asarray(predictions.classes, object), np.asarray(ground_truth.classes, object)
        parts: list[tuple[int, Steps]] = []
        num_gt = np.zeros(len(self._entries), np.int64)
        e = 0
        for cls in cfg.classes:
            pm = np.flatnonzero(pred_cls == cls) if len(predictions) else np.zeros(0, np.int64)
            gm = np.flatnonzero(gt_cls == cls) if len(ground_truth) else np.zeros(0, np.int64)
            if pm.size == 0 and gm.size == 0:
                e += len(bands) * len(levels)
                continue
            order = pm[np.argsort(-predictions.scores[pm], kind="stable")]
            pb, ps = predictions.boxes[order], predictions.scores[order]
            gb, glevel = ground_truth.boxes[gm], gt_level_all[gm]
            if cfg.matcher == "iou":
                sim, thr = box_iou(pb, gb, cfg.iou_type), cfg.threshold(cls)
                closeness = sim
            else:
                dist = centre_distance(pb, gb)
                sim, thr = -dist, -cfg.threshold(cls)
                closeness = 1.0 - dist / (2.0 * cfg.threshold(cls))
            weight = np.where(sim >= thr, np.rint(closeness * _WEIGHT_STEPS), 0.0)
            accuracy = heading_accuracy(pb[:, None, 6], gb[None, :, 6])
            p_range, g_range = cfg.box_range(pb), cfg.box_range(gb)
            for lo, hi in bands:
                pin = np.flatnonzero((p_range >= lo) & (p_range < hi))
                gin = np.flatnonzero((g_range >= lo) & (g_range < hi))
                cut = np.ix_(pin, gin)
                steps, counted = band_steps(
                    ps[pin], sim[cut], thr, weight[cut], accuracy[cut], glevel[gin], levels,
                    cfg.matching, cfg.harder_matches,
                )
                for st, n in zip(steps, counted, strict=True):
                    parts.append((e, st))
                    num_gt[e] = n
                    e += 1
        state = _FrameState(
            entry=_cat([np.full(len(st), i, np.int32) for i, st in parts], np.int32),
            score=_cat([st.score for _, st in parts], np.float64),
            tp=_cat([st.tp for _, st in parts], np.int64),
            fp=_cat([st.fp for _, st in parts], np.int64),
            fn=_cat([st.fn for _, st in parts], np.int64),
            heading=_cat([st.heading for _, st in parts], np.float64),
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
        fields = ("score", "tp", "fp", "fn", "heading")
        if frames:
            entry = np.concatenate([f.entry for f in frames])
            cols = {k: np.concatenate([getattr(f, k) for f in frames]) for k in fields}
            num_gt = np.sum([f.num_gt for f in frames], axis=0)
        else:
            entry = np.zeros(0, np.int32)
            cols = {k: np.zeros(0) for k in fields}
            num_gt = np.zeros(n_entries, np.int64)
        order = np.lexsort((-cols["score"], entry))  # by entry, then descending score
        bounds = np.searchsorted(entry[order], np.arange(n_entries + 1))
        entries: dict[tuple[str, str, str], MetricEntry] = {}
        for i, (cls, band, level) in enumerate(self._entries):
            idx = order[bounds[i]:bounds[i + 1]]
            n = int(num_gt[i])
            score = cols["score"][idx]
            tp, fp = np.cumsum(cols["tp"][idx]), np.cumsum(cols["fp"][idx])
            fn, h = n + np.cumsum(cols["fn"][idx]), np.cumsum(cols["heading"][idx])
            curve, ap, aph = self._metrics(score, tp, fp, fn, h, n)
            entries[(cls, band, level)] = MetricEntry(
                cls=cls, band=band, level=level, ap=ap, aph=aph, num_gt=n,
                num_pred=int(tp[-1] + fp[-1]) if idx.size else 0,
                num_tp=int(tp[-1]) if idx.size else 0, curve=curve,
            )
        return DetectionResult(config=self.config, num_frames=len(frames), entries=entries)

    def _metrics(self, score, tp, fp, fn, h, n) -> tuple[PRCurve, float, float]:
        """The curve, AP and APH of one entry from its cumulative counts along descending scores."""
        cfg = self.config
        if cfg.ap_integration == "recall_grid":
            last = np.flatnonzero(np.r_[score[1:] != score[:-1], True]) if score.size else np.zeros(0, int)
            curve = counts_curve(score[last], tp[last], fp[last], fn[last], h[last])
            return (
                curve,
                average_precision(curve, n, cfg.recall_points),
                average_precision(curve, n, cfg.recall_points, heading=True),
            )
        # Score cutoffs, compared in float32 as the official op stores scores and cutoffs.
        cutoffs = np.asarray(cfg.score_cutoffs, np.float32)
        taken = np.searchsorted(-score.astype(np.float32), -cutoffs, side="right")  # scores >= cutoff
        at = np.maximum(taken - 1, 0)
        some = taken > 0
        counts = [np.where(some, a[at], 0) if a.size else np.zeros(cutoffs.size) for a in (tp, fp, h)]
        fn_at = np.where(some, fn[at], n) if fn.size else np.full(cutoffs.size, n)
        curve = cutoff_curve(cutoffs.astype(np.float64), counts[0], counts[1], fn_at, counts[2])
        return (
            curve,
            cutoff_average_precision(curve, n, cfg.recall_delta),
            cutoff_average_precision(curve, n, cfg.recall_delta, heading=True),
        )


def _cat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def _distributed() -> Any:
    """`torch.distributed` when a process group is initialized, else None (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return None
    return dist


def _rank() -> int:
    dist = _distributed()
    return 0 if dist is None else int(dist.get_rank())
