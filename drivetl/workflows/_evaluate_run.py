"""Run a loaded detector over an evaluation data set: frames -> canonical samples -> batches -> boxes.

Predictions and ground truth are both in the canonical vehicle frame (DESIGN.md: x forward, y left,
z up, metres, ground at z = 0), because the data goes through the sample pipeline of training
(`drivetl.data.dataset`: the same rig-driven canonicalization, the model's batch spec, one
collate). With ``fusion_health`` a camera model also runs on the same batches with every camera
hidden (``camera_valid`` False, images zero: what a rig without usable cameras looks like to the
fusion), and the change of its heatmaps is measured.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivetl.data.canonicalize import canonicalize
from drivetl.data.dataset import open_source
from drivetl.data.records import Boxes, FrameKey
from drivetl.errors import DataError
from drivetl.eval import DetectionEvaluator, Detections, in_region
from drivetl.models.adapters import adapted_forward
from drivetl.models.tta import tta_forward
from drivetl.workflows._eval_frames import SkippedFrame, frame_batches
from drivetl.workflows._evaluate_load import LoadedModel


@dataclass
class EvalData:
    """An evaluation data set: a frame source (``len``, ``[i] -> FrameRecord``), the frames used,
    the rig (team folder: its rig.yaml; Waymo files: the first frame's calibration)."""

    root: Path
    source: Any
    indices: list[int]
    rig: Any
    format: str
    split: str | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in getattr(self.rig, "cameras", ()))


def open_eval_data(
    root: str | Path, fmt: str = "auto", split: str | None = None, max_frames: int | None = None
) -> EvalData:
    """Open a team folder (optionally one split of it), Waymo TFRecords, a Waymo v2 folder or a
    training cache."""
    root = Path(root)
    source = open_source(root, fmt, option="--data")
    kind = type(source).__name__
    names = {"TeamReader": "team", "WaymoRecordIndex": "waymo", "WaymoV2RecordIndex": "waymo-v2"}
    fmt_name = {**names, "TrainingCache": "cache"}.get(kind, fmt)
    if split is not None:
        if fmt_name != "team":
            raise DataError(
                f"{root}: --split {split} needs a team folder (splits/{split}.txt); this is {fmt_name}"
            )
        source = source.split(split)
    n = len(source)
    if n == 0:
        raise DataError(f"{root}: no frames to evaluate" + (f" in split {split!r}" if split else ""))
    if max_frames is not None:
        if max_frames < 1:
            raise DataError(f"--max-frames {max_frames}: evaluate at least one frame")
        n = min(n, max_frames)
    rig = getattr(source, "rig", None)
    if rig is None:
        rig = source[0].rig
    return EvalData(root, source, list(range(n)), rig, fmt_name, split)


@dataclass
class FramePrediction:
    """One frame: its key, ground truth (canonical frame) and the model's detections (canonical names)."""

    key: FrameKey
    ground_truth: Boxes
    detections: Detections


@dataclass
class ModelRun:
    """What running one model produced. frames: one per position of the data in `positions` (every
    position but the skipped ones); blind: the same frames with cameras hidden (fusion health);
    heat_change: mean |sigmoid(heatmap) - sigmoid(heatmap without cameras)| over cells, relative to
    the mean sigmoid(heatmap); coverage: mean share of BEV cells a camera saw (camera models only);
    skipped: frames left out as unreadable (``skip_corrupt``)."""

    frames: list[FramePrediction] = field(default_factory=list)
    blind: list[FramePrediction] | None = None
    heat_change: float | None = None
    coverage: float | None = None
    seconds: float = 0.0
    positions: list[int] = field(default_factory=list)
    skipped: list[SkippedFrame] = field(default_factory=list)

    def keep(self, positions: set[int]) -> None:
        """Keep only the frames at `positions` (frames another model could not read are dropped,
        so every model is scored on the same frames)."""
        kept = [k for k, p in enumerate(self.positions) if p in positions]
        self.frames = [self.frames[k] for k in kept]
        if self.blind is not None:
            self.blind = [self.blind[k] for k in kept]
        self.positions = [self.positions[k] for k in kept]


def _to_detections(det: Any, loaded: LoadedModel) -> Detections:
    """A head's `Detections` (int labels into the model's classes) -> eval Detections (canonical names)."""
    labels = det.labels.detach().cpu().numpy().astype(np.int64)
    names = [loaded.canonical[i] for i in labels]
    keep = np.array([n is not None for n in names], bool)
    boxes = det.boxes.detach().cpu().numpy().astype(np.float64)[keep]
    scores = det.scores.detach().cpu().numpy().astype(np.float64)[keep]
    finite = np.isfinite(boxes).all(1) & np.isfinite(scores)
    classes = tuple(n for n, k in zip(names, keep, strict=True) if k)
    classes = tuple(c for c, f in zip(classes, finite, strict=True) if f)
    return Detections(boxes[finite], scores[finite], classes)


def hide_cameras(batch):
    """The same batch as a rig without usable cameras would give: every view invalid, images zero."""
    return dataclasses.replace(
        batch, images=torch.zeros_like(batch.images), camera_valid=torch.zeros_like(batch.camera_valid)
    )


def run_model(
    loaded: LoadedModel,
    data: EvalData,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    fusion_health: bool = False,
    score_threshold: float = 0.05,
    workers: int = 0,
    skip_corrupt: bool = False,
    progress: Callable[[int], None] | None = None,
    tta: str = "none",
) -> ModelRun:
    """Predict every frame of `data` with `loaded`; `progress(n)` is called after each batch of n frames.

    Each frame's own rig vector (from the data's rig) conditions FiLM adapters. A frame that cannot
    be read stops the run with a `DataError` naming it, or with `skip_corrupt` is left out and listed
    in `ModelRun.skipped` (`drivetl.workflows._eval_frames`). tta: a `drivetl.models.tta.TTA_MODES`
    mode, the model's output maps averaged over mirrored views of each frame (checked by the caller
    with `check_tta`)."""
    t0 = time.perf_counter()
    model = loaded.model.to(device).eval()
    cameras = loaded.has_camera
    check = fusion_health and cameras
    batches = frame_batches(
        data, loaded.batch_spec, batch_size=batch_size, workers=workers, skip_corrupt=skip_corrupt
    )
    run = ModelRun(blind=[] if check else None)
    heat_diff = heat_mean = cover = 0.0
    n_batches = 0
    with torch.inference_mode():
        for samples, batch, skipped in batches:
            run.skipped += skipped
            if batch is None:
                if progress is not None:
                    progress(len(skipped))
                continue
            batch = batch.to(device)
            outs = tta_forward(lambda b: adapted_forward(model, b), batch, tta)
            dets = outs.detections(score_threshold=score_threshold)
            for s, d in zip(samples, dets, strict=True):
                run.frames.append(FramePrediction(s.key, s.boxes, _to_detections(d, loaded)))
            if cameras and outs.camera is not None:
                cover += float(outs.camera.coverage.float().mean())
            if check:
                blind = adapted_forward(model, hide_cameras(batch))
                bd = blind.detections(score_threshold=score_threshold)
                for s, d in zip(samples, bd, strict=True):
                    run.blind.append(FramePrediction(s.key, s.boxes, _to_detections(d, loaded)))
                h1, h0 = outs.heatmap.float().sigmoid(), blind.heatmap.float().sigmoid()
                heat_diff += float((h1 - h0).abs().mean())
                heat_mean += float(h1.mean())
            n_batches += 1
            if progress is not None:
                progress(len(samples) + len(skipped))
    if check and n_batches:
        run.heat_change = heat_diff / max(heat_mean, 1e-12)
    if cameras and n_batches:
        run.coverage = cover / n_batches
    bad = {s.position for s in run.skipped}
    run.positions = [p for p in range(len(data)) if p not in bad]
    run.seconds = time.perf_counter() - t0
    return run


def accumulate(frames: Sequence[FramePrediction], config, region: Sequence[float] | None = None):
    """A `DetectionResult` over `frames`; ground truth and predictions outside `region` left out."""
    ev = DetectionEvaluator(config)
    for f in frames:
        gt, det = in_region_frame(f, region)
        ev.update(det, gt, key=f.key)
    return ev.compute()


def in_region_frame(f: FramePrediction, region: Sequence[float] | None) -> tuple[Boxes, Detections]:
    """(ground truth, detections) of one frame with the boxes outside `region` left out."""
    gt = f.ground_truth.select(in_region(f.ground_truth.boxes, region))
    keep = in_region(f.detections.boxes, region)
    cls = tuple(c for c, k in zip(f.detections.classes, keep, strict=True) if k)
    return gt, Detections(f.detections.boxes[keep], f.detections.scores[keep], cls)


def class_box_errors(
    frames: Sequence[FramePrediction], classes: Sequence[str], region=None, distance: float = 2.0
):
    """{class: `drivetl.eval.BoxErrors`} of the centre-distance matches (metres) of `frames`;
    `region` as in `accumulate`."""
    from drivetl.eval import BoxErrorAccumulator

    acc = BoxErrorAccumulator(classes, distance)
    for f in frames:
        gt, det = in_region_frame(f, region)
        acc.update(det, gt)
    return acc.compute()


def true_positive_errors(frames: Sequence[FramePrediction], config, region=None) -> dict[str, float]:
    """`drivetl.eval.TruePositiveErrors` of `frames` under `config`'s IoU matching, every class;
    `region` as in `accumulate`."""
    from drivetl.eval import TruePositiveErrors

    acc = TruePositiveErrors()
    for f in frames:
        gt, det = in_region_frame(f, region)
        gt_cls, det_cls = np.asarray(gt.classes, dtype=object), np.asarray(det.classes, dtype=object)
        for cls in config.classes:
            g, sel = gt.boxes[gt_cls == cls], det_cls == cls
            acc.update(det.boxes[sel], det.scores[sel], g, config.iou_type, config.iou_thresholds[cls])
    return acc.compute()


def iter_points(data: EvalData, indices: Sequence[int]) -> Iterator[tuple[FrameKey, np.ndarray]]:
    """(key, (N, 3) float32 canonical x, y, z) of the frames at positions `indices` of `data`."""
    for i in indices:
        s = canonicalize(data.source[data.indices[i]], decode_images=False)
        yield s.key, s.points[:, :3]
