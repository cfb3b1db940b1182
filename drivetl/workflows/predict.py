"""Run a detector on new frames and write detection files (`drivetl predict`).

``predict("adapters.safetensors@pretrained.ckpt", "drive_0042/", "preds/")`` (or ``onnx="model.onnx"``
instead of a checkpoint) streams the frames of any source evaluate reads (a team folder or one of
its splits, Waymo TFRecords, the training cache) through the sample pipeline of training, in
batches, so memory stays bounded by one batch; decodes boxes; and writes one JSON per frame in the
team label schema (`drivetl.workflows._predictions`), plus bird's-eye and camera renders of a few
frames and a self-contained report.html.

Resumable: a frame whose file exists is skipped; the manifest (``predict.json``) records the model's
sha256 and the score threshold, and a rerun into the same folder with another model or threshold
stops with an error instead of mixing two models' files. Frames per second are measured over the
frames this run predicted (reading, canonicalization, network and decoding included).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivetl._io import atomic_write_text
from drivetl.data.dataset import BatchSpec
from drivetl.errors import ConfigError, DataError, DrivetlError, one_line
from drivetl.models import decode
from drivetl.workflows._eval_frames import SKIP_HINT, SkippedFrame, check_frames, frame_batches, frame_label
from drivetl.workflows._evaluate_load import ModelSpec, canonical_classes, load_model
from drivetl.workflows._evaluate_run import EvalData, open_eval_data
from drivetl.workflows._predictions import (
    FORMAT,
    MANIFEST,
    frame_document,
    frame_path,
    read_manifest,
    write_frame,
)

__all__ = ["PredictSummary", "predict"]


@dataclass
class PredictSummary:
    """What `predict` did: frames predicted now, skipped (already there), detections, speed, files;
    corrupt: frames left out as unreadable (``skip_corrupt``), which a rerun tries again."""

    out: Path
    predicted: int = 0
    skipped: int = 0
    detections: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    renders: list[tuple[str, Path]] = field(default_factory=list)
    report: Path | None = None
    corrupt: list[SkippedFrame] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        """Frames predicted per second of this run (nan when none was predicted)."""
        return self.predicted / self.seconds if self.predicted and self.seconds > 0 else float("nan")


#: one frame's detections: boxes (D, 7) canonical vehicle frame, scores (D,), class indices (D,)
_Found = tuple[np.ndarray, np.ndarray, np.ndarray]


class _TorchPredictor:
    """A checkpoint (or adapters on their base) run in torch."""

    def __init__(self, spec: ModelSpec, device: str, tta: str = "none"):
        from drivetl.models.tta import check_model_tta
        from drivetl.workflows.export_onnx import file_sha256

        self.loaded = load_model(spec)
        check_model_tta(tta, self.loaded.model)
        self.tta = tta
        self.model = self.loaded.model.to(device).eval()
        self.device = device
        files = [spec.path] + ([Path(self.loaded.meta["base"])] if self.loaded.kind == "adapters" else [])
        self.sha256 = file_sha256([f for f in files if f.is_file()])
        self.name, self.source = self.loaded.name, self.loaded.source
        self.classes, self.canonical = self.loaded.classes, self.loaded.canonical
        self.columns, self.spec = self.loaded.columns, self.loaded.batch_spec
        self.point_range = self.loaded.point_range
        self.geometry = self.model.geometry
        self.coding = self.model.head.coding

    def detect(self, samples, batch, score_threshold: float) -> list[_Found]:
        """Per frame: boxes (D, 7), scores (D,), class indices (D,) (numpy, best first)."""
        from drivetl.models.adapters import adapted_forward
        from drivetl.models.tta import tta_forward

        out = tta_forward(lambda b: adapted_forward(self.model, b), batch.to(self.device), self.tta)
        dets = decode(
            out.heatmap, out.regression, self.geometry, score_threshold=score_threshold, coding=self.coding
        )
        return [(d.boxes.cpu().numpy(), d.scores.cpu().numpy(), d.labels.cpu().numpy()) for d in dets]


class _OnnxPredictor:
    """An exported model run with onnxruntime and decoded with numpy (no torch), one frame at a time."""

    def __init__(self, path: Path):
        from drivetl.workflows._onnx_runner import OnnxDetector
        from drivetl.workflows.export_onnx import file_sha256

        self.detector = OnnxDetector(path)
        meta = self.detector.meta
        self.sha256 = file_sha256([path])
        self.name, self.source = path.stem, str(path)
        self.classes = self.detector.classes
        self.canonical = canonical_classes(self.classes)
        self.columns = self.detector.columns
        self.spec = BatchSpec(columns=self.columns, classes=self.classes)
        self.point_range = tuple(meta["grid"]["point_range"])
        self.tta = "none"

    def detect(self, samples, batch, score_threshold: float) -> list[_Found]:
        """Per frame: boxes (D, 7), scores (D,), class indices (D,) (numpy, best first)."""
        dets = [self.detector.detect(s.points, s.columns, score_threshold) for s in samples]
        return [(d.boxes, d.scores, d.labels) for d in dets]


def _manifest(pred, data: EvalData, score_threshold: float) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": {
            "name": pred.name,
            "source": pred.source,
            "sha256": pred.sha256,
            "classes": [c or h for c, h in zip(pred.canonical, pred.classes, strict=True)],
            "columns": list(pred.columns),
            "point_range": [float(v) for v in pred.point_range],
        },
        "data": {"root": str(data.root), "format": data.format, "split": data.split, "frames": len(data)},
        "score_threshold": float(score_threshold),
        "tta": pred.tta,
    }


def _check_resume(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    old = read_manifest(out)
    if old is None or overwrite:
        return
    differs = [
        what
        for same, what in (
            (old.get("model", {}).get("sha256") == manifest["model"]["sha256"], "another model"),
            (old.get("score_threshold") == manifest["score_threshold"],
             f"score threshold {old.get('score_threshold')}"),
            (old.get("tta", "none") == manifest["tta"], f"test-time augmentation {old.get('tta', 'none')}"),
        )
        if not same
    ]
    if differs:
        what = differs[0]
        raise DataError(
            f"{out / MANIFEST}: this folder holds predictions of {what}; pass a new --out, the same "
            "model, threshold and --tta to resume, or --overwrite"
        )


def predict(
    model: str | ModelSpec | None,
    data: str | Path | EvalData,
    out: str | Path,
    *,
    onnx: str | Path | None = None,
    split: str | None = None,
    data_format: str = "auto",
    max_frames: int | None = None,
    score_threshold: float = 0.05,
    render: int = 3,
    render_score: float = 0.3,
    batch_size: int = 4,
    device: str = "cpu",
    workers: int = 0,
    overwrite: bool = False,
    skip_corrupt: bool = False,
    html: bool = True,
    tta: str = "none",
    log: Callable[[str], Any] | None = print,
    progress: Callable[[int, int], Any] | None = None,
) -> PredictSummary:
    """Predict every frame of `data` into `out` (see the module docstring); returns the summary.

    model: ``CKPT`` or ``ADAPTERS@BASE`` (or a `ModelSpec`); onnx: an exported model instead.
    score_threshold: boxes under it are not written (the same default as evaluate's decoding, so
    `drivetl evaluate --predictions` reproduces the checkpoint's AP; raise it for pseudo-labels).
    render: frames drawn (bird's-eye view, and camera views when the data has images).
    skip_corrupt: a frame that cannot be read is left out (no file written, so a rerun tries it
        again), counted and named in predict.json and report.html; default: the run stops with one
        line naming it. Before the model runs, the first frame is decoded with the model's inputs
        (`drivetl.workflows._eval_frames.check_frames`), even with `skip_corrupt`.
    tta: test-time augmentation of a torch model (`drivetl.models.tta`, as `drivetl evaluate
        --tta`); recorded in predict.json. An exported ONNX model runs one pass.
    progress(done, total): called after each batch.
    """
    log = log or (lambda _msg: None)
    if (model is None) == (onnx is None):
        raise ConfigError("predict: give either --ckpt or --onnx")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: use at least 1")
    out = Path(out)
    ds = data if isinstance(data, EvalData) else open_eval_data(data, data_format, split, max_frames)
    if onnx is not None:
        if tta != "none":
            raise ConfigError(f"--tta {tta}: an exported ONNX model runs one pass per frame; use --ckpt")
        pred: Any = _OnnxPredictor(Path(onnx))
    else:
        spec = ModelSpec.parse(model) if isinstance(model, str) else model
        pred = _TorchPredictor(spec, device, tta)
    check_frames(ds, [pred.spec])
    manifest = _manifest(pred, ds, score_threshold)
    _check_resume(out, manifest, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MANIFEST, _json(manifest))
    summary = PredictSummary(out)

    # which frames still need a file (each frame's key read cheaply from its source, no points decoded)
    keys = _keys(ds, skip_corrupt)
    todo = [
        pos for pos, key in enumerate(keys) if overwrite or key is None or not frame_path(out, key).is_file()
    ]
    summary.skipped = len(ds) - len(todo)
    if summary.skipped:
        log(f"resuming: {summary.skipped} of {len(ds)} frames already predicted")
    picks = set(_spread(len(ds), render))
    batches = frame_batches(
        ds, pred.spec, positions=todo, batch_size=batch_size, workers=workers, skip_corrupt=skip_corrupt
    )
    t0 = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for samples, batch, skipped in batches:
            summary.corrupt += skipped
            for s in skipped:
                log(f"skipped unreadable frame {s.frame}: {s.reason}")
            found = pred.detect(samples, batch, score_threshold) if samples else []
            bad = {s.position for s in skipped}
            positions = [p for p in todo[done : done + len(samples) + len(skipped)] if p not in bad]
            done += len(samples) + len(skipped)
            for pos, s, (boxes, scores, labels) in zip(positions, samples, found, strict=True):
                names = [pred.canonical[i] or pred.classes[i] for i in labels.tolist()]
                boxes, scores = boxes.astype(np.float64), scores.astype(np.float64)
                write_frame(out, frame_document(s.key, boxes, scores, names, s.ground_z))
                summary.detections += len(names)
                for n in names:
                    summary.per_class[n] = summary.per_class.get(n, 0) + 1
                if pos in picks:
                    summary.renders += _render_frame(
                        out, ds, pos, s, boxes, scores, names, render_score, skip_corrupt, log
                    )
            if progress is not None:
                progress(summary.skipped + done, len(ds))
    done -= len(summary.corrupt)
    summary.predicted = done
    summary.seconds = time.perf_counter() - t0
    manifest.update(
        complete=True,
        predicted=summary.predicted,
        skipped=summary.skipped,
        detections=summary.detections,
        frames_per_second=None if not done else round(summary.frames_per_second, 3),
        skipped_corrupt={"count": len(summary.corrupt), "frames": [c.to_dict() for c in summary.corrupt]},
    )
    atomic_write_text(out / MANIFEST, _json(manifest))
    if html:
        from drivetl.workflows._html_report import predict_page

        summary.report = predict_page(out, manifest, summary)
    log(
        f"predicted {summary.predicted} frames ({summary.skipped} already done"
        + (f", {len(summary.corrupt)} skipped as unreadable" if summary.corrupt else "")
        + f"), {summary.detections} boxes, {summary.frames_per_second:.2f} frames/s"
    )
    return summary


def _json(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc, indent=1) + "\n"


def _keys(ds: EvalData, skip_corrupt: bool = False) -> list:
    """The frame key of every frame of `ds`, without reading point clouds where the source allows;
    with `skip_corrupt` None for a frame whose key cannot be read (it is tried, and skipped, later)."""
    keys = getattr(ds.source, "keys", None)  # team folders and the training cache list their keys
    if isinstance(keys, list | tuple):
        return [keys[i] for i in ds.indices]
    record_key = getattr(ds.source, "record_key", None)  # Waymo TFRecords: the key from the record's head
    read = record_key if callable(record_key) else (lambda i: ds.source[i].key)
    out = []
    for i in ds.indices:
        try:
            out.append(read(i))
        except DrivetlError:
            if not skip_corrupt:
                raise
            out.append(None)
    return out


def _spread(n: int, count: int) -> list[int]:
    if count <= 0 or n == 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(count, n))})


def _render_frame(
    out, ds, pos, sample, boxes, scores, names, score, skip_corrupt, log
) -> list[tuple[str, Path]]:
    from drivetl.data.canonicalize import canonicalize
    from drivetl.eval import Detections
    from drivetl.workflows._renders import render_bev, render_cameras

    det = Detections(boxes, scores, tuple(names))
    try:
        full = canonicalize(ds.source[ds.indices[pos]], decode_images=True)
    except DrivetlError as exc:  # a camera image the model did not read
        label = frame_label(ds, pos)
        if not skip_corrupt:
            msg = f"{one_line(exc)} (frame {label}, rendered for the report); {SKIP_HINT}"
            raise DataError(msg) from None
        log(f"frame {label} not rendered: {one_line(exc)}")
        return []
    shown = [(f"{sample.key} bird's-eye view", render_bev(out / "renders", full, det, score, None))]
    shown += render_cameras(out / "renders", full, det, score)
    return shown
