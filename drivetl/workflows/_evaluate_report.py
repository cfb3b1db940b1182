"""The evaluation report folder: metrics.json, report.md, PR curves, per-range bars, BEV renders.

Layout of REPORT_DIR::

    metrics.json          data (with the frames skipped as unreadable), region, per model: source,
                          classes, notes, full DetectionResult; fusion health per camera model;
                          warnings
    report.md             comparison tables (LEVEL_2 and LEVEL_1), figures, fusion health, notes
    pr_curves.png         precision/recall per class, one line per model (LEVEL_2, all ranges)
    range_bars.png        mAP per range band, one bar per model
    heading_errors.png    orientation error of centre-distance matches, per class, one line per model
    bev/<frame>__<model>.png   bird's-eye views: ground truth, predictions, LiDAR points
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivetl._io import atomic_write_text
from drivetl.eval import (
    DetectionResult,
    box_error_table,
    comparison_table,
    write_bev_frame,
    write_heading_histograms,
    write_pr_curves,
    write_range_bars,
)

#: a fusion model whose heatmaps change less than this share without cameras ignores its camera
HEAT_CHANGE_WARN = 0.01
#: ... and whose mAP changes less than this (absolute) without cameras gains nothing from it
AP_DELTA_WARN = 0.01


@dataclass
class FusionHealth:
    """Camera contribution of one fusion model: mAP/mAPH with and without cameras (LEVEL_2, all
    ranges), the relative heatmap change, the camera BEV coverage, and the verdict."""

    name: str
    map_with: float
    map_without: float
    maph_with: float
    maph_without: float
    heat_change: float
    coverage: float
    without: DetectionResult | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def delta(self) -> float:
        return self.map_with - self.map_without

    def to_dict(self) -> dict[str, Any]:
        return {
            "map_with_cameras": _num(self.map_with),
            "map_without_cameras": _num(self.map_without),
            "maph_with_cameras": _num(self.maph_with),
            "maph_without_cameras": _num(self.maph_without),
            "map_delta": _num(self.delta),
            "heatmap_change": _num(self.heat_change),
            "camera_coverage": _num(self.coverage),
            "warnings": list(self.warnings),
        }


def fusion_verdict(h: FusionHealth) -> list[str]:
    """The warnings a fusion-health measurement deserves (empty: the camera branch contributes)."""
    out = []
    if h.coverage <= 1e-6:
        out.append(
            f"{h.name}: the camera branch saw no BEV cell on this data (no images, or the model's "
            "camera names/calibration do not match the rig): the fusion ran LiDAR-only"
        )
    elif h.heat_change < HEAT_CHANGE_WARN:
        out.append(
            f"{h.name}: hiding the cameras changes the heatmaps by only {h.heat_change:.2%}: "
            "the fusion ignores its camera branch (a known failure on custom rigs; check the "
            "camera calibration and fine-tune with camera dropout off)"
        )
    elif not math.isnan(h.delta) and abs(h.delta) < AP_DELTA_WARN:
        out.append(
            f"{h.name}: the cameras change the heatmaps ({h.heat_change:.1%}) but not the mAP "
            f"({h.delta:+.3f}); the camera branch adds nothing measurable on this data"
        )
    return out


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def write_report(
    out: Path,
    results: Mapping[str, DetectionResult],
    models: Sequence[Mapping[str, Any]],
    data_info: Mapping[str, Any],
    fusion: Sequence[FusionHealth] = (),
    warnings: Sequence[str] = (),
    bev: Sequence[tuple[str, Path]] = (),
    figures: bool = True,
    extra: Mapping[str, Mapping[str, DetectionResult]] | None = None,
    box_errors: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write metrics.json, report.md and the figures into `out`; returns name -> path.

    box_errors: model name -> {class: `drivetl.eval.BoxErrors`} (centre-distance matches)."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if figures:
        paths["pr_curves"] = write_pr_curves(results, out / "pr_curves.png")
        paths["range_bars"] = write_range_bars(results, out / "range_bars.png")
        if box_errors:
            paths["heading_errors"] = write_heading_histograms(box_errors, out / "heading_errors.png")
    doc = {
        "data": dict(data_info),
        "models": [dict(m, result=results[m["name"]].to_dict()) for m in models],
        "fusion_health": {h.name: h.to_dict() for h in fusion},
        "other_matchers": {x: {n: r.to_dict() for n, r in res.items()} for x, res in (extra or {}).items()},
        "warnings": list(warnings),
        "box_errors": {n: {c: e.to_dict() for c, e in per.items()} for n, per in (box_errors or {}).items()},
    }
    paths["metrics"] = out / "metrics.json"
    atomic_write_text(paths["metrics"], json.dumps(doc, indent=1, allow_nan=False) + "\n")
    paths["report"] = out / "report.md"
    atomic_write_text(
        paths["report"],
        render_markdown(results, models, data_info, fusion, warnings, bev, figures, out, extra, box_errors),
    )
    return paths


def render_markdown(
    results, models, data_info, fusion, warnings, bev, figures, out: Path, extra=None, box_errors=None
) -> str:
    """The text of report.md."""
    lines = ["# Detection evaluation", ""]
    region = data_info.get("region")
    lines += [
        f"- data: `{data_info.get('root')}` ({data_info.get('format')}"
        + (f", split `{data_info['split']}`" if data_info.get("split") else "")
        + f"), {data_info.get('frames')} frames, rig `{data_info.get('rig')}`",
        "- region: "
        + (
            f"box centres with x in [{region[0]:g}, {region[2]:g}) m and y in "
            f"[{region[1]:g}, {region[3]:g}) m (the models' detection range)"
            if region
            else "every box"
        ),
        f"- matching: {data_info.get('matching')}",
        *([f"- test-time augmentation: {data_info['tta_views']}"] if data_info.get("tta_views") else []),
        *([f"- metrics: {next(iter(results.values())).config.describe()}"] if results else []),
        "",
    ]
    lines += [
        "## Comparison",
        "",
        comparison_table(results, level="LEVEL_2"),
        "",
        comparison_table(results, level="LEVEL_1"),
        "",
    ]
    for matcher, res in (extra or {}).items():
        what = {
            "iou": "rotated-box IoU, Waymo thresholds",
            "bev": "bird's-eye-view IoU, Waymo thresholds",
        }.get(matcher, "BEV centre distance")
        lines += [
            f"### The same predictions, {what} matching",
            "",
            comparison_table(res, level="LEVEL_2"),
            "",
        ]
    if box_errors:
        lines += [
            "### Box errors (matches within 2 m of a ground-truth centre)",
            "",
            "Median (mean) per matched pair: BEV and z centre error, scale error (1 - IoU with centres and "
            "headings aligned), orientation error (smallest yaw difference, radians; a box turned by 180 "
            "degrees counts pi and as a flip), median 3D IoU of the pairs.",
            "",
            box_error_table(box_errors),
        ]
        if figures:
            lines += ["![heading errors](heading_errors.png)", ""]
    lines += ["## Models", "", "| model | kind | source | classes | inference s |", "|---|---|---|---|---:|"]
    for m in models:
        classes = ", ".join(
            c if k == c else f"{c}->{k}" for c, k in zip(m["classes"], m["canonical"], strict=True)
        )
        lines.append(f"| {m['name']} | {m['kind']} | `{m['source']}` | {classes} | {m['seconds']:.1f} |")
    lines.append("")
    for m in models:
        for note in m.get("notes", []):
            lines.append(f"- {m['name']}: {note}")
    if any(m.get("notes") for m in models):
        lines.append("")
    if fusion:
        lines += [
            "## Fusion health (cameras hidden)",
            "",
            "| model | mAP with cameras | mAP without | delta | heatmap change | camera coverage |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for h in fusion:
            lines.append(
                f"| {h.name} | {_f(h.map_with)} | {_f(h.map_without)} | {_f(h.delta, sign=True)} | "
                f"{h.heat_change:.2%} | {h.coverage:.1%} |"
            )
        lines.append("")
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    skipped = skipped_lines(data_info)
    if skipped:
        lines += ["## Skipped frames", "", skipped[0], ""] + [f"- {t}" for t in skipped[1:]] + [""]
    if figures:
        lines += ["## Figures", "", "![PR curves](pr_curves.png)", "", "![mAP by range](range_bars.png)", ""]
    if bev:
        lines += [
            "## Bird's-eye views",
            "",
            "Ground truth solid green; predictions dashed, coloured by class, opacity by score.",
            "",
        ]
        for label, path in bev:
            lines += [f"**{label}**", "", f"![{label}]({path.relative_to(out).as_posix()})", ""]
    return "\n".join(lines).rstrip() + "\n"


def skipped_lines(data_info: Mapping[str, Any]) -> list[str]:
    """The report's lines about frames left out as unreadable: a count, then the first few frames."""
    from drivetl.workflows._eval_frames import SkippedFrame, skipped_summary

    info = data_info.get("skipped_corrupt") or {}
    frames = [SkippedFrame(**f) for f in info.get("frames", [])]
    return skipped_summary(frames, int(data_info.get("frames", 0)) + len(frames))


def _f(x: float, sign: bool = False) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def render_bev(
    out: Path, key, name: str, points, ground_truth, detections, region, score_threshold: float
) -> Path:
    """One BEV figure under out/bev/; returns its path."""
    extent = None
    if region is not None:
        extent = max(abs(v) for v in region) + 2.0
    path = out / "bev" / f"{slug(str(key))}__{slug(name)}.png"
    return write_bev_frame(
        path,
        ground_truth,
        detections,
        points=points,
        extent=extent,
        score_threshold=score_threshold,
        title=f"{name}: {key}",
    )
