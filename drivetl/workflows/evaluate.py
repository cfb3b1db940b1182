"""Evaluate detectors on fleet data, side by side (`drivetl evaluate`).

``evaluate(["scratch.ckpt", "pretrain.ckpt", "adapters.safetensors@pretrain.ckpt"], "fleet/", "report/",
split="test")`` loads each model (`ModelSpec`: a pretraining or fine-tuning checkpoint, or an adapter
file on its base checkpoint), runs it over the data (canonicalized with the data's own rig, exactly
as in training), decodes boxes, accumulates a `DetectionEvaluator` per model and writes the report
folder (`drivetl.workflows._evaluate_report`: metrics.json, report.md, PR curves, per-range bars, BEV
renders). ``fusion_health=True`` reruns every camera model with its cameras hidden and reports the
camera branch's contribution, with a warning when it contributes nothing.

By default only boxes whose centre lies in the models' detection range (the common part of their
LiDAR grids' x/y extents) are evaluated, so a ±25.6 m model is not charged for objects at 60 m it
cannot see; ``region="all"`` evaluates every box.

A model may also be a folder of prediction files written by `drivetl predict`
(`drivetl.workflows._predictions.PredictionFiles`): its frames are read instead of predicted, and
scored exactly as the model that wrote them would be. Besides report.md the report folder holds a
self-contained report.html (`drivetl.workflows._html_report`) with camera renders and box errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drivetl.data.dataset import BatchSpec
from drivetl.errors import ConfigError, DataError, DrivetlError, one_line
from drivetl.eval import DetectionResult, EvalConfig
from drivetl.models.tta import TTA_VIEWS_TEXT, check_model_tta
from drivetl.workflows._eval_frames import SKIP_HINT, SkippedFrame, check_frames, frame_label
from drivetl.workflows._evaluate_load import (
    CLASS_ALIASES,
    LoadedModel,
    ModelSpec,
    canonical_classes,
    load_model,
    unique_names,
)
from drivetl.workflows._evaluate_report import FusionHealth, fusion_verdict, render_bev, write_report
from drivetl.workflows._evaluate_run import (
    EvalData,
    FramePrediction,
    ModelRun,
    accumulate,
    class_box_errors,
    hide_cameras,
    open_eval_data,
    run_model,
    true_positive_errors,
)
from drivetl.workflows._html_report import evaluate_page
from drivetl.workflows._predictions import PredictionFiles

__all__ = [
    "CLASS_ALIASES",
    "EvalData",
    "EvaluationReport",
    "FramePrediction",
    "FusionHealth",
    "LoadedModel",
    "ModelRun",
    "ModelSpec",
    "PredictionFiles",
    "accumulate",
    "canonical_classes",
    "evaluate",
    "hide_cameras",
    "load_model",
    "open_eval_data",
    "run_model",
]


@dataclass
class EvaluationReport:
    """What `evaluate` produced: results per model name (display order), fusion health, warnings, files,
    and the frames left out as unreadable (``skip_corrupt``)."""

    results: dict[str, DetectionResult]
    fusion: list[FusionHealth] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, dict[str, DetectionResult]] = field(default_factory=dict)
    runs: dict[str, ModelRun] = field(default_factory=dict)
    box_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[SkippedFrame] = field(default_factory=list)

    def table(self, level: str = "LEVEL_2") -> str:
        """The Markdown comparison table of the models at `level`."""
        from drivetl.eval import comparison_table

        return comparison_table(self.results, level=level)


def _region(models: Sequence[LoadedModel]) -> tuple[float, float, float, float]:
    """The x/y rectangle every model's grid covers: (x_min, y_min, x_max, y_max) metres."""
    ranges = [m.point_range for m in models]
    return (
        max(r[0] for r in ranges),
        max(r[1] for r in ranges),
        min(r[3] for r in ranges),
        min(r[4] for r in ranges),
    )


def _eval_config(
    models: Sequence[LoadedModel], range_edges: Sequence[float] | None, matcher: str, iou_type: str
) -> EvalConfig:
    from drivetl.data.records import CLASSES

    present = {c for m in models for c in m.canonical if c is not None}
    classes = tuple(c for c in CLASSES if c in present)
    if not classes:
        raise ConfigError(
            "no model predicts a canonical class (vehicle, pedestrian, cyclist, sign); "
            "map its classes with --class-map NAME=vehicle"
        )
    kwargs: dict[str, Any] = {"classes": classes, "matcher": matcher, "iou_type": iou_type}
    if range_edges is not None:
        kwargs["range_edges"] = tuple(range_edges)
    return EvalConfig(**kwargs)


def evaluate(
    models: Sequence[ModelSpec | str | LoadedModel | PredictionFiles],
    data: str | Path | EvalData,
    out: str | Path,
    *,
    names: Sequence[str] | None = None,
    split: str | None = None,
    data_format: str = "auto",
    max_frames: int | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    workers: int = 0,
    fusion_health: bool = False,
    region: Literal["model", "all"] = "model",
    range_edges: Sequence[float] | None = None,
    matcher: Literal["iou", "distance"] = "iou",
    iou_type: Literal["3d", "bev"] = "3d",
    extra_matchers: Sequence[str] = (),
    score_threshold: float = 0.05,
    render_frames: int = 3,
    render_score: float = 0.3,
    class_map: Mapping[str, str] | None = None,
    figures: bool = True,
    skip_corrupt: bool = False,
    tta: str = "none",
    log: Callable[[str], Any] | None = print,
    progress: Callable[[str, int, int], Any] | None = None,
) -> EvaluationReport:
    """Evaluate `models` on `data` and write the report folder `out`; returns the `EvaluationReport`.

    models: `ModelSpec`s, strings as given to ``--ckpt`` (``CKPT`` or ``ADAPTER@BASE``), already
        loaded models, or `PredictionFiles` (a `drivetl predict` folder).
    names: display names, one per model (default: file stems).
    split: a team folder's split (``splits/<split>.txt``); max_frames: evaluate the first N frames.
    region: "model" keeps the boxes inside every model's detection range, "all" keeps every box.
    range_edges: metres, the range bands of the breakdown (default 0, 30, 50, inf).
    extra_matchers: more matchers ("iou" | "bev" | "distance"; "bev" is the rotated BEV IoU at the same
        thresholds) whose tables the report adds, from the same
        predictions (`EvaluationReport.extra[matcher]`).
    score_threshold: decoding threshold (low, so the PR curves reach high recall).
    render_frames: frames rendered in bird's-eye view per model (evenly spread over the data).
    skip_corrupt: a frame that cannot be read is left out of every model's evaluation, counted and
        named in the report (default: the run stops with one line naming it). Before any model runs,
        the first frame is decoded for each model and a team folder's labels are read
        (`drivetl.workflows._eval_frames.check_frames`; labels only without `skip_corrupt`).
    tta: test-time augmentation of every model evaluated here (`drivetl.models.tta.TTA_MODES`:
        "none", "flip", "double_flip"): each frame is also predicted mirrored and the output maps
        averaged before decoding; refused for camera models and grids not symmetric about x = 0 and
        y = 0. Prediction files are scored as they were written.
    progress(stage, done, total): called as frames are predicted (stage names the model).
    """
    log = log or (lambda _msg: None)
    if names is not None and len(names) != len(models):
        raise ConfigError(
            f"--name given {len(names)} times for {len(models)} --ckpt; give one per checkpoint"
        )
    if not models:
        raise ConfigError("evaluate: give at least one --ckpt")
    ds = data if isinstance(data, EvalData) else open_eval_data(data, data_format, split, max_frames)
    specs = []
    for i, m in enumerate(models):
        name = names[i] if names is not None else None
        if isinstance(m, str):
            m = ModelSpec.parse(m, name)
        elif isinstance(m, ModelSpec) and name:
            m = ModelSpec(m.path, name, m.base)
        elif isinstance(m, LoadedModel | PredictionFiles) and name:
            m.name = name
        specs.append(m)
    spec_only = unique_names([s for s in specs if isinstance(s, ModelSpec)])
    it = iter(spec_only)
    specs = [next(it) if isinstance(s, ModelSpec) else s for s in specs]
    loaded = [s if isinstance(s, LoadedModel | PredictionFiles) else load_model(s, class_map) for s in specs]
    if len({m.name for m in loaded}) != len(loaded):
        raise ConfigError(f"model names must be distinct, got {[m.name for m in loaded]}; use --name")
    for m in loaded:
        if isinstance(m, LoadedModel):
            check_model_tta(tta, m.model, where=f"--tta ({m.name})")
    check_frames(ds, [_spec(m) for m in loaded], labels=not skip_corrupt)
    box_region = _region(loaded) if region == "model" else None
    config = _eval_config(loaded, range_edges, matcher, iou_type)
    extra_configs = {
        x: _eval_config(loaded, range_edges, "iou" if x == "bev" else x, "bev" if x == "bev" else iou_type)
        for x in extra_matchers
        if x != matcher
    }
    data_info = {
        "root": str(ds.root),
        "format": ds.format,
        "split": ds.split,
        "frames": len(ds),
        "rig": getattr(ds.rig, "name", ""),
        "region": list(box_region) if box_region else None,
        "matching": (
            f"{iou_type.upper()} IoU >= "
            + ", ".join(f"{c} {config.iou_thresholds[c]:g}" for c in config.classes)
        )
        if matcher == "iou"
        else (
            "centre distance <= "
            + ", ".join(f"{c} {config.distance_thresholds[c]:g} m" for c in config.classes)
        ),
        "classes": list(config.classes),
        "range_edges": config.to_dict()["range_edges"],
        "tta": tta,
        "tta_views": TTA_VIEWS_TEXT[tta] if tta != "none" else None,
    }
    report = EvaluationReport(results={})
    runs: dict[str, ModelRun] = {}
    for m in loaded:
        log(f"evaluate {m.name} ({m.kind}, {m.source}) on {len(ds)} frames")
        warn_cameras(m, ds, report.warnings)
        done = [0]

        def tick(n: int, _name: str = m.name, _done: list = done) -> None:
            _done[0] += n
            if progress is not None:
                progress(_name, _done[0], len(ds))

        if isinstance(m, PredictionFiles):
            run = m.run(ds, progress=tick, skip_corrupt=skip_corrupt)
        else:
            run = run_model(
                m,
                ds,
                batch_size=batch_size,
                device=device,
                fusion_health=fusion_health,
                score_threshold=score_threshold,
                workers=workers,
                skip_corrupt=skip_corrupt,
                progress=tick,
                tta=tta,
            )
        runs[m.name] = run
        if m.model is not None:
            m.model.to("cpu")
    # every model is scored on the frames every model could read
    skipped = _skipped(runs)
    kept = [p for p in range(len(ds)) if p not in skipped]
    if not kept:
        raise DataError(f"{ds.root}: none of the {len(ds)} frames could be read (see skipped frames)")
    for run in runs.values():
        run.keep(set(kept))
    report.skipped = list(skipped.values())
    data_info["frames"] = len(kept)
    data_info["skipped_corrupt"] = {"count": len(skipped), "frames": [s.to_dict() for s in skipped.values()]}
    if skipped:
        report.warnings.append(
            f"{len(skipped)} of {len(ds)} frames could not be read and were left out of every model's "
            "evaluation (--skip-corrupt); see Skipped frames"
        )
    for m in loaded:
        run = runs[m.name]
        report.results[m.name] = accumulate(run.frames, config, box_region)
        report.box_errors[m.name] = class_box_errors(run.frames, config.classes, box_region)
        for x, cfg in extra_configs.items():
            report.extra.setdefault(x, {})[m.name] = accumulate(run.frames, cfg, box_region)
        if fusion_health and m.has_camera:
            report.fusion.append(_fusion(m, run, config, box_region))
        elif fusion_health:
            log(f"{m.name}: LiDAR-only model, no fusion health to measure")
        report.models.append(
            {
                "name": m.name,
                "kind": m.kind,
                "source": m.source,
                "classes": list(m.classes),
                "canonical": [c for c in m.canonical],
                "columns": list(m.columns),
                "camera_names": list(m.camera_names) if m.camera_names else None,
                "notes": list(m.notes),
                "seconds": round(run.seconds, 3),
            }
        )
    for h in report.fusion:
        report.warnings.extend(h.warnings)
    bev, cams = (
        _render(
            Path(out), ds, kept, runs, box_region, render_frames, render_score, skip_corrupt, report.warnings
        )
        if render_frames > 0
        else ([], [])
    )
    report.runs = runs
    report.paths = write_report(
        Path(out),
        report.results,
        report.models,
        data_info,
        report.fusion,
        report.warnings,
        bev,
        figures,
        report.extra,
        report.box_errors,
    )
    report.paths["html"] = evaluate_page(
        Path(out),
        [report.table("LEVEL_2"), report.table("LEVEL_1")],
        report.models,
        data_info,
        report.warnings,
        [(n, report.paths[n]) for n in ("pr_curves", "range_bars") if n in report.paths],
        bev + cams,
        {name: true_positive_errors(run.frames, config, box_region) for name, run in runs.items()},
    )
    for w in report.warnings:
        log(f"warning: {w}")
    return report


def warn_cameras(m: LoadedModel, ds: EvalData, warnings: list[str]) -> None:
    """Note a camera model whose cameras the data lacks (it would silently run LiDAR-only)."""
    if not m.has_camera:
        return
    data_cams = set(ds.camera_names)
    wanted = list(m.camera_names or ())
    if not data_cams:
        warnings.append(f"{m.name}: a camera model, but the data's rig has no camera; it runs LiDAR-only")
    elif wanted and not data_cams & set(wanted):
        warnings.append(
            f"{m.name}: trained on cameras {wanted}, the data has {sorted(data_cams)}; none "
            "matches, so the camera branch sees nothing"
        )


def _fusion(m: LoadedModel, run: ModelRun, config: EvalConfig, box_region) -> FusionHealth:
    without = accumulate(run.blind or [], config, box_region)
    with_ = accumulate(run.frames, config, box_region)
    h = FusionHealth(
        name=m.name,
        map_with=with_.mean("ap"),
        map_without=without.mean("ap"),
        maph_with=with_.mean("aph"),
        maph_without=without.mean("aph"),
        heat_change=float(run.heat_change or 0.0),
        coverage=float(run.coverage or 0.0),
        without=without,
    )
    h.warnings = fusion_verdict(h)
    return h


def _spec(m: LoadedModel | PredictionFiles) -> BatchSpec:
    """What the start-up check decodes for `m`: its batch spec (prediction files: points only)."""
    if isinstance(m, PredictionFiles):
        return BatchSpec(columns=("x", "y", "z", "intensity"))
    return m.batch_spec


def _skipped(runs: Mapping[str, ModelRun]) -> dict[int, SkippedFrame]:
    """Position -> the first report of every frame some model could not read, by position."""
    out: dict[int, SkippedFrame] = {}
    for run in runs.values():
        for s in run.skipped:
            out.setdefault(s.position, s)
    return dict(sorted(out.items()))


def _render(
    out: Path,
    ds: EvalData,
    kept: Sequence[int],
    runs: Mapping[str, ModelRun],
    box_region,
    count: int,
    score: float,
    skip_corrupt: bool,
    warnings: list[str],
) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Bird's-eye views (report.md and report.html) and camera views (report.html) of a few of the
    evaluated frames (`kept`: their positions in `ds`, in the order of each run's frames)."""
    import dataclasses

    import numpy as np

    from drivetl.data.canonicalize import canonicalize
    from drivetl.eval import in_region
    from drivetl.workflows._renders import render_cameras

    n = len(kept)
    picks = sorted({int(round(x)) for x in np.linspace(0, n - 1, min(count, n))})
    rendered, cameras = [], []
    with_images = bool(ds.camera_names)
    for pos in picks:
        try:
            sample = canonicalize(ds.source[ds.indices[kept[pos]]], decode_images=with_images)
        except DrivetlError as exc:  # a camera image no model read
            label = frame_label(ds, kept[pos])
            if not skip_corrupt:
                msg = f"{one_line(exc)} (frame {label}, rendered for the report); {SKIP_HINT}"
                raise DataError(msg) from None
            warnings.append(f"frame {label} not rendered: {one_line(exc)}")
            continue
        key, points = sample.key, sample.points[:, :3]
        if box_region is not None:
            points = points[in_region(np.column_stack([points, np.zeros((len(points), 4))]), box_region)]
        for name, run in runs.items():
            f = run.frames[pos]
            gt = f.ground_truth.select(in_region(f.ground_truth.boxes, box_region))
            path = render_bev(out, key, name, points, gt, f.detections, box_region, score)
            rendered.append((f"{name}, frame {key}", path))
            if with_images:
                cameras += render_cameras(
                    out, dataclasses.replace(sample, boxes=gt), f.detections, score, name
                )
    return rendered, cameras


def parse_range_edges(text: str | None) -> tuple[float, ...] | None:
    """``"0,30,50"`` -> (0, 30, 50, inf): band edges in metres (the last band is open)."""
    if text is None:
        return None
    try:
        edges = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--range-edges {text!r}: give comma-separated metres, e.g. 0,30,50") from None
    if not edges or not math.isinf(edges[-1]):
        edges.append(math.inf)
    return tuple(edges)
