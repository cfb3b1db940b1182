"""Report helpers: Markdown comparison and box-error tables, PR curves, per-range AP bars,
heading-error histograms, a BEV frame render.

Figures use matplotlib's Agg canvas directly (no pyplot, no global backend switch), imported when
a function is called. Every file is written atomically; the format follows the suffix (png, svg,
pdf). `results` arguments map a model name to its `DetectionResult`, in display order.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from drivetl._io import atomic_write_bytes
from drivetl.data.records import Boxes
from drivetl.eval._box_errors import BoxErrors, heading_error_histogram
from drivetl.eval._config import ALL_RANGES, Detections
from drivetl.eval._iou import box_corners_bev
from drivetl.eval._result import CURVE_GRID, DetectionResult

_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
_CLASS_COLOURS = {
    "vehicle": "tab:blue", "pedestrian": "tab:orange", "cyclist": "tab:purple", "sign": "tab:brown",
}


def _as_results(results: Mapping[str, DetectionResult] | DetectionResult) -> dict[str, DetectionResult]:
    if isinstance(results, DetectionResult):
        return {"model": results}
    out = dict(results)
    if not out:
        raise ValueError("no results to report")
    return out


def _classes_with_gt(results: Mapping[str, DetectionResult], band: str, level: str) -> list[str]:
    classes: list[str] = []
    for res in results.values():
        for c in res.classes:
            e = res.entries.get((c, band, level))
            if c not in classes and e is not None and e.num_gt > 0:
                classes.append(c)
    return classes


def _fmt(x: float, digits: int) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def comparison_table(
    results: Mapping[str, DetectionResult], level: str = "LEVEL_2", band: str = ALL_RANGES, digits: int = 3
) -> str:
    """A Markdown table, one row per model: frames, mAP, mAPH, AP/APH per class (classes with
    ground truth), and mAP per range band. "n/a" marks a metric without ground truth."""
    results = _as_results(results)
    classes = _classes_with_gt(results, band, level)
    bands = [b for b in next(iter(results.values())).bands if b != ALL_RANGES]
    header = [
        "model", "frames", "mAP", "mAPH", *[f"{c} AP/APH" for c in classes], *[f"mAP {b} m" for b in bands],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, res in results.items():
        row = [str(name).replace("|", "\\|"), str(res.num_frames),
               _fmt(res.mean("ap", band, level), digits), _fmt(res.mean("aph", band, level), digits)]
        for c in classes:
            e = res.get(c, band, level) if c in res.classes else None
            row.append("n/a" if e is None else f"{_fmt(e.ap, digits)} / {_fmt(e.aph, digits)}")
        for b in bands:
            row.append(_fmt(res.mean("ap", b, level), digits) if b in res.bands else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    title = f"{level}, range {band}" + ("" if band == ALL_RANGES else " m")
    return f"Detection metrics ({title}):\n\n" + "\n".join(lines) + "\n"


def box_error_table(errors: Mapping[str, Mapping[str, BoxErrors]], digits: int = 2) -> str:
    """A Markdown table, one row per (model, class): matched/ground truth, then median (mean) of the
    BEV and z translation errors (m), the scale error (1 - aligned IoU), the orientation error (rad),
    the share of flipped headings and the median 3D IoU of the matched pairs."""
    header = [
        "model", "class", "matched / gt", "BEV m", "z m", "scale", "orientation rad", "flips", "3D IoU",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "|".join(["---:"] * (len(header) - 2)) + "|"]
    for name, per_class in errors.items():
        for cls, e in per_class.items():
            s = e.summary()

            def mm(key: str, s: Mapping[str, Any] = s) -> str:
                return f"{_fmt(s[key + '_median'], digits)} ({_fmt(s[key + '_mean'], digits)})"

            row = [
                str(name).replace("|", "\\|"), cls, f"{e.num_matched} / {e.num_gt}",
                mm("translation_bev"), mm("translation_z"), mm("scale"), mm("orientation"),
                _fmt(100 * s["flip_share"], 0) + "%" if not math.isnan(s["flip_share"]) else "n/a",
                _fmt(s["iou_3d_median"], digits),
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_heading_histograms(
    errors: Mapping[str, Mapping[str, BoxErrors]], path: str | os.PathLike, bins: int = 18
) -> Path:
    """One panel per class, one step histogram of the orientation error (degrees) per model."""
    classes: list[str] = []
    for per_class in errors.values():
        classes += [c for c in per_class if c not in classes]
    fig = _new_figure(4.0 * max(1, len(classes)), 3.2)
    axes = fig.subplots(1, max(1, len(classes)), squeeze=False)[0]
    for ax, cls in zip(axes, classes, strict=False):
        for name, per_class in errors.items():
            e = per_class.get(cls)
            if e is None or e.num_matched == 0:
                continue
            counts, edges = heading_error_histogram(e.orientation, bins)
            share = counts / max(1, counts.sum())
            median = np.degrees(np.median(e.orientation))
            ax.stairs(share, np.degrees(edges), label=f"{name} (median {median:.0f} deg)")
        ax.set_title(f"{cls}: heading error of matches")
        ax.set_xlabel("|heading error| (degrees)")
        ax.set_ylabel("share of matches")
        ax.set_xlim(0, 180)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> Path:
    target = Path(path)
    fmt = _FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise ValueError(f"{target}: unsupported figure format; use one of {sorted(_FORMATS)}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, bbox_inches="tight")
    atomic_write_bytes(target, buf.getvalue())
    return target


def write_pr_curves(
    results: Mapping[str, DetectionResult] | DetectionResult,
    path: str | os.PathLike,
    band: str = ALL_RANGES,
    level: str = "LEVEL_2",
    heading: bool = False,
) -> Path:
    """One panel per class with ground truth, one interpolated precision/recall curve per model
    (APH-weighted with heading=True), the AP in the legend. Returns the written path."""
    results = _as_results(results)
    classes = _classes_with_gt(results, band, level) or list(next(iter(results.values())).classes)
    fig = _new_figure(4.0 * len(classes), 3.6)
    axes = fig.subplots(1, len(classes), squeeze=False)[0]
    metric = "APH" if heading else "AP"
    for ax, cls in zip(axes, classes, strict=True):
        for name, res in results.items():
            if cls not in res.classes:
                continue
            e = res.get(cls, band, level)
            ax.plot(CURVE_GRID, e.curve.interpolated(CURVE_GRID, heading=heading),
                    label=f"{name} ({metric} {_fmt(e.aph if heading else e.ap, 3)})")
        ax.set_title(f"{cls} ({band}, {level})")
        ax.set_xlabel("recall (heading-weighted)" if heading else "recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def write_range_bars(
    results: Mapping[str, DetectionResult] | DetectionResult,
    path: str | os.PathLike,
    metric: str = "ap",
    level: str = "LEVEL_2",
    cls: str | None = None,
) -> Path:
    """Grouped bars: one group per range band, one bar per model, of `metric` ("ap" or "aph") for
    class `cls`, or the mean over classes when None. Bands without ground truth show "n/a"."""
    results = _as_results(results)
    bands = [b for b in next(iter(results.values())).bands if b != ALL_RANGES]
    fig = _new_figure(max(5.0, 1.6 * len(bands) * max(1, len(results)) / 2 + 2), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(results)
    x = np.arange(len(bands))
    for k, (name, res) in enumerate(results.items()):
        values = np.array([
            res.mean(metric, b, level) if cls is None else getattr(res.get(cls, b, level), metric)
            for b in bands
        ])
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, np.nan_to_num(values), width, label=name)
        for p, v in zip(pos, values, strict=True):
            ax.text(p, (0 if math.isnan(v) else v) + 0.01, _fmt(v, 2), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"{b} m" for b in bands])
    what = "mean over classes" if cls is None else cls
    ax.set_ylabel(f"{metric.upper()} ({level})")
    ax.set_title(f"{metric.upper()} by range, {what}")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _draw_boxes(ax: Any, boxes: np.ndarray, colours: list[str], style: str, alphas: np.ndarray) -> None:
    corners = box_corners_bev(boxes)
    for box, c, colour, alpha in zip(boxes, corners, colours, alphas, strict=True):
        ring = np.vstack([c, c[:1]])
        ax.plot(ring[:, 0], ring[:, 1], style, color=colour, alpha=float(alpha), linewidth=1.2)
        front = (c[0] + c[3]) / 2  # centre of the front edge: shows the heading
        ax.plot([box[0], front[0]], [box[1], front[1]], style, color=colour, alpha=float(alpha),
                linewidth=1.2)


def write_bev_frame(
    path: str | os.PathLike,
    ground_truth: Boxes,
    predictions: Detections | None = None,
    points: np.ndarray | None = None,
    extent: float | None = None,
    score_threshold: float = 0.0,
    title: str = "",
) -> Path:
    """Bird's-eye view of one frame: ground truth (green, solid), predictions (dashed, coloured by
    class, opacity by score; those below score_threshold left out), LiDAR points optional.

    points: (N, >=2) float, vehicle frame x, y first (metres). extent: half-size of the square
    view in metres around the vehicle; by default it fits every box (at least 20 m).
    """
    fig = _new_figure(7.0, 7.0)
    ax = fig.subplots()
    if points is not None and len(points):
        pts = np.asarray(points, np.float64)
        ax.scatter(pts[:, 0], pts[:, 1], s=0.3, c="0.55", linewidths=0, rasterized=True)
    if len(ground_truth):
        n = len(ground_truth)
        _draw_boxes(ax, ground_truth.boxes, ["tab:green"] * n, "-", np.ones(n))
    shown = 0
    if predictions is not None and len(predictions):
        keep = predictions.scores >= score_threshold
        boxes, scores = predictions.boxes[keep], predictions.scores[keep]
        classes = [c for c, k in zip(predictions.classes, keep, strict=True) if k]
        colours = [_CLASS_COLOURS.get(c, "tab:red") for c in classes]
        _draw_boxes(ax, boxes, colours, "--", np.clip(0.25 + 0.75 * scores, 0.25, 1.0))
        shown = len(boxes)
    if extent is None:
        reach = [np.abs(b.boxes[:, :2]).max() + 5 for b in (ground_truth,) if len(b)]
        if predictions is not None and len(predictions):
            reach.append(np.abs(predictions.boxes[:, :2]).max() + 5)
        extent = max([20.0, *reach])
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.plot([0], [0], marker=(3, 0, -90), color="k", markersize=9)  # the vehicle, facing +x
    ax.set_xlabel("x forward (m)")
    ax.set_ylabel("y left (m)")
    ax.set_title(title or f"{len(ground_truth)} ground truth (green), {shown} predictions (dashed)")
    ax.grid(alpha=0.2)
    return _save(fig, path)
