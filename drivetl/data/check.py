"""`drivetl check`: look at a data folder the way a model will, before anyone trains on it.

`run_check(data, out_dir, against=None)` reads a sample of frames (a team-format folder, or Waymo v1
TFRecords), canonicalizes them with their rig, and writes `REPORT_DIR/report.md` with PNG figures:
LiDAR points over each camera image coloured by depth, a bird's-eye view with boxes, histograms of
height / range / intensity (against a source dataset when given), points per box by class and
range, and box sizes against the source. It lists `Issue`s with the fix for each: ground not near
z = 0, intensity scale problems, image sizes that disagree with the intrinsics, boxes without
points, classes missing from the mapping, and mounting / beam differences from the source.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivetl._io import atomic_write_text
from drivetl.calib.se3 import rpy_from_rotation
from drivetl.data.canonicalize import canonicalize, estimate_ground, points_in_boxes, size_statistics
from drivetl.data.formats.team._validate import Issue, validate_team_folder
from drivetl.data.records import FrameRecord
from drivetl.errors import DataError, DrivetlError

__all__ = ["CheckResult", "DatasetStats", "Issue", "collect_stats", "open_records", "run_check"]

_SUBSAMPLE = 200_000


@dataclass
class DatasetStats:
    """What `check` measures over a sample of frames (canonical frame unless named `raw`)."""

    name: str
    rig: object = None
    frames: int = 0
    points: list[int] = field(default_factory=list)
    height: np.ndarray = field(default_factory=lambda: np.zeros(0))
    range: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intensity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    raw_intensity: dict[str, np.ndarray] = field(default_factory=dict)
    ground: list[float] = field(default_factory=list)
    vehicle_ground: list[float] = field(default_factory=list)
    box_rows: list[tuple[str, float, int]] = field(default_factory=list)
    empty_boxes: list[str] = field(default_factory=list)
    sizes: dict = field(default_factory=dict)
    first: FrameRecord | None = None
    first_points: np.ndarray | None = None
    first_sample: object = None
    overlay_points: dict[str, int] = field(default_factory=dict)


@dataclass
class CheckResult:
    """What `run_check` found: issues, the report and its figures, the statistics (and the source's)."""
    issues: list[Issue]
    report: Path
    figures: list[Path]
    stats: DatasetStats
    source_stats: DatasetStats | None = None

    @property
    def has_errors(self) -> bool:
        """True when an issue is an error (the command exits 1)."""
        return any(i.severity == "error" for i in self.issues)


def open_records(path: str | os.PathLike, max_frames: int = 20) -> Iterator[FrameRecord]:
    """Up to `max_frames` records (evenly spaced for team folders) from a team folder, Waymo TFRecords
    or a Waymo v2 folder."""
    path = Path(path)
    if path.is_dir() and (path / "rig.yaml").is_file():
        from drivetl.data.formats.team import TeamReader

        reader = TeamReader(path)
        n = len(reader)
        picks = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int)) if n else []
        for i in picks:
            try:
                yield reader[int(i)]
            except DrivetlError:
                continue  # validate_team_folder reports it
        return
    from drivetl.data.formats.waymo import WaymoV1Reader, WaymoV2Reader, is_v2_folder

    if is_v2_folder(path):
        reader = WaymoV2Reader(path, threads=1)
        for i in range(min(len(reader), max_frames)):
            yield reader[i].to_record()
        return
    files = sorted(path.glob("*.tfrecord*")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise DataError(
            f"{path}: neither a team-format folder (with rig.yaml), Waymo .tfrecord files nor a Waymo v2 "
            "folder"
        )

    count = 0
    for f in files:
        for frame in WaymoV1Reader(f):
            yield frame.to_record()
            count += 1
            if count >= max_frames:
                return


def collect_stats(records: Iterator[FrameRecord], name: str, seed: int = 0) -> DatasetStats:
    """Canonicalize each record with its rig and gather the report's measurements."""
    rng = np.random.default_rng(seed)
    st = DatasetStats(name)
    hs, rs, its, recs = [], [], [], []
    for rec in records:
        st.rig = rec.rig
        info: dict = {}
        sample = canonicalize(rec, decode_images=False, report=info)
        st.vehicle_ground.append(float(info["ground_z"]))
        pts = sample.points
        if st.first is None:
            st.first, st.first_points, st.first_sample = rec, pts, sample
            for cam in sample.cameras:
                if cam.name in rec.cameras:
                    st.overlay_points[cam.name] = int(np.asarray(cam.project(pts[:, :3])[2]).sum())
        st.frames += 1
        st.points.append(len(pts))
        for lname, lp in rec.lidars.items():
            raw = lp.points[:, 3]
            st.raw_intensity[lname] = np.concatenate(
                [st.raw_intensity.get(lname, np.zeros(0)), raw[rng.permutation(len(raw))[:20000]]]
            )
        sub = pts[rng.permutation(len(pts))[: _SUBSAMPLE // 4]]
        hs.append(sub[:, 2])
        rs.append(np.linalg.norm(sub[:, :3], axis=1))
        its.append(sub[:, 3])
        if len(pts) >= 50:
            try:
                st.ground.append(estimate_ground(pts).height)
            except DataError:
                pass
        boxes = sample.boxes
        if len(boxes):
            counts = points_in_boxes(pts, boxes.boxes).sum(axis=1)
            for i in range(len(boxes)):
                rng_m = float(np.hypot(*boxes.boxes[i, :2]))
                st.box_rows.append((boxes.classes[i], rng_m, int(counts[i])))
                if counts[i] == 0:
                    st.empty_boxes.append(f"{rec.key} box {i} ({boxes.classes[i]}, {rng_m:.0f} m)")
        recs.append(sample)
    if st.frames == 0:
        raise DataError(f"{name}: no frames to check")
    st.height, st.range, st.intensity = (np.concatenate(v) for v in (hs, rs, its))
    st.sizes = size_statistics(recs)
    return st


def _intensity_issues(st: DatasetStats, where: str) -> list[Issue]:
    issues = []
    for lidar in st.rig.lidars:
        raw = st.raw_intensity.get(lidar.name)
        if raw is None or raw.size == 0:
            continue
        enc = lidar.intensity
        p99 = float(np.percentile(raw, 99))
        at = f"{where}: lidars.{lidar.name}.intensity"
        if enc.transform == "linear" and float(np.mean(raw > enc.max_value * 1.01)) > 0.01:
            issues.append(
                Issue(
                    "error",
                    at,
                    f"{100 * np.mean(raw > enc.max_value):.1f}% of raw intensities exceed "
                    f"the declared max {enc.max_value:g} (p99 = {p99:.3g}); they all clip to 1",
                    f"set `intensity: {{max: {np.max(raw):.4g}}}` (or the sensor's true scale) in rig.yaml",
                )
            )
        elif p99 > 0 and p99 < 0.05 * enc.max_value and enc.transform == "linear":
            issues.append(
                Issue(
                    "error",
                    at,
                    f"raw intensities use a tiny part of the declared scale (p99 = {p99:.3g}"
                    f" of max {enc.max_value:g}); canonical intensity is nearly 0",
                    "declare the encoding the data really has (e.g. `{encoding: float, max: 1.0}`)",
                )
            )
    return issues


def _compare_issues(st: DatasetStats, src: DatasetStats) -> list[Issue]:
    issues = []
    m_data, m_src = float(np.median(st.intensity)), float(np.median(src.intensity))
    ratio = (m_data + 1e-3) / (m_src + 1e-3)
    encs = {(ld.intensity.kind, ld.intensity.max_value, ld.intensity.transform) for ld in st.rig.lidars}
    encs_src = {(ld.intensity.kind, ld.intensity.max_value, ld.intensity.transform) for ld in src.rig.lidars}
    if not 0.5 <= ratio <= 2.0 or encs != encs_src:
        issues.append(
            Issue(
                "warning",
                "intensity",
                f"intensity differs from the source: canonical median "
                f"{m_data:.3f} vs {m_src:.3f}; raw encodings {sorted(encs)} vs {sorted(encs_src)}",
                "confirm each rig's `intensity` encoding; fine-tune the input adapter or drop "
                "intensity if the sensors' reflectivity scales cannot be matched",
            )
        )
    gd, gs = _lidar_mount(st), _lidar_mount(src)
    if gd and gs:
        dh, dp, dr = gd[0] - gs[0], gd[1] - gs[1], gd[2] - gs[2]
        if abs(dh) > 0.2 or abs(dp) > 0.5 or abs(dr) > 0.5:
            issues.append(
                Issue(
                    "warning",
                    "mounting",
                    f"the LiDAR is mounted differently from the source: height "
                    f"above ground {gd[0]:.2f} vs {gs[0]:.2f} m, pitch {gd[1]:.1f} vs {gs[1]:.1f} deg,"
                    f" roll {gd[2]:.1f} vs {gs[2]:.1f} deg",
                    "make sure rig.yaml's vehicle_from_sensor is measured, not guessed: "
                    "canonicalization and the rig-aware adapters rely on it",
                )
            )
    bd = sorted(ld.inclinations.size for ld in st.rig.lidars)
    bs = sorted(ld.inclinations.size for ld in src.rig.lidars)
    if bd[:1] != bs[:1]:
        issues.append(
            Issue(
                "warning",
                "beams",
                f"beam counts differ from the source ({bd} vs {bs})",
                "consider `canonicalize(..., target_beams=...)` to re-sample the denser source",
            )
        )
    return issues


def _lidar_mount(st: DatasetStats) -> tuple[float, float, float] | None:
    if not st.rig.lidars:
        return None
    m = st.rig.lidars[0].vehicle_from_lidar
    ground = float(np.median(st.vehicle_ground)) if st.vehicle_ground else 0.0
    roll, pitch, _ = rpy_from_rotation(m[:3, :3])
    return float(m[2, 3] - ground), float(np.degrees(pitch)), float(np.degrees(roll))


def _data_issues(st: DatasetStats, where: str) -> list[Issue]:
    issues = _intensity_issues(st, where)
    if st.ground:
        g = float(np.median(st.ground))
        if abs(g) > 0.1:
            sev = "error" if abs(g) > 0.3 else "warning"
            rig_g = st.rig.ground
            fix = (
                f"set `ground: {round(rig_g + g, 2) + 0.0:.2f}` in rig.yaml (or `ground: estimate`)"
                if not isinstance(rig_g, str)
                else "set `ground:` in rig.yaml to the measured ground height"
            )
            issues.append(
                Issue(
                    sev,
                    f"{where}: ground",
                    f"after canonicalization the ground is at z = {g:+.2f} m "
                    f"(median RANSAC fit over {len(st.ground)} frames), not near 0",
                    fix,
                )
            )
    if st.empty_boxes:
        issues.append(
            Issue(
                "warning",
                f"{where}: boxes",
                f"{len(st.empty_boxes)} of {len(st.box_rows)} boxes hold no "
                f"LiDAR points (first: {st.empty_boxes[0]})",
                "check the label frame (vehicle vs sensor) and the LiDAR extrinsic; drop unobservable boxes",
            )
        )
    rec = st.first
    if rec is not None:
        for name, img in rec.cameras.items():
            try:
                w, h = img.size()
                rec.rig.camera(name).check_image_size(w, h, f"{where}: {rec.key} camera {name}")
            except DrivetlError as exc:
                issues.append(
                    Issue(
                        "error",
                        f"{where}: cameras.{name}",
                        str(exc),
                        "fix width/height/intrinsics in rig.yaml (CameraModel.scaled for resized images)",
                    )
                )
    return issues


def run_check(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    against: str | os.PathLike | None = None,
    max_frames: int = 20,
    figures: bool = True,
) -> CheckResult:
    """Check `data` (optionally against `against`) and write the report into `out_dir`.

    figures: False writes the Markdown report without PNG figures (faster).
    """
    from drivetl.data._check_plots import write_figures

    data, out = Path(data), Path(out_dir)
    issues: list[Issue] = []
    if data.is_dir() and (data / "rig.yaml").exists():
        issues += validate_team_folder(data, max_frames=max_frames)
    try:
        stats = collect_stats(open_records(data, max_frames), str(data))
    except DrivetlError as exc:
        issues.append(
            Issue("error", str(data), str(exc), "fix the file the message names, then re-run check")
        )
        report = out / "report.md"
        atomic_write_text(report, write_markdown(data, against, issues, None, None, []))
        return CheckResult(issues, report, [], DatasetStats(str(data)))
    issues += _data_issues(stats, str(data))
    src_stats = None
    if against is not None:
        src_stats = collect_stats(open_records(against, max_frames), str(against))
        issues += _compare_issues(stats, src_stats)
    figs = write_figures(out, stats, src_stats) if figures else []
    report = out / "report.md"
    atomic_write_text(report, write_markdown(data, against, issues, stats, src_stats, figs))
    return CheckResult(issues, report, figs, stats, src_stats)


def write_markdown(
    data: Path,
    against,
    issues: list[Issue],
    st: DatasetStats | None,
    src: DatasetStats | None,
    figures: list[Path],
) -> str:
    """The report's Markdown text (figures linked by file name, relative to the report)."""
    errors = sum(i.severity == "error" for i in issues)
    lines = [f"# Data check: `{data}`", ""]
    if against is not None:
        lines += [f"Compared against: `{against}`", ""]
    verdict = "**FAIL**" if errors else "**OK**"
    lines += [f"Result: {verdict} - {errors} errors, {len(issues) - errors} warnings.", ""]
    if st is not None:
        lines += ["## Summary", "", "| | data | source |", "|---|---|---|"]

        def row(label: str, f) -> None:
            lines.append(f"| {label} | {f(st)} | {f(src) if src is not None else ''} |")

        row("rig", lambda s: getattr(s.rig, "name", ""))
        row("frames checked", lambda s: s.frames)
        row("points per frame (median)", lambda s: int(np.median(s.points)))
        row("boxes", lambda s: len(s.box_rows))
        row(
            "LiDAR points on each camera image (first frame)",
            lambda s: ", ".join(f"{k}: {v}" for k, v in s.overlay_points.items()) or "no images",
        )
        row(
            "ground after canonicalization (median z, m)",
            lambda s: f"{np.median(s.ground):+.3f}" if s.ground else "n/a",
        )
        row("canonical intensity (median)", lambda s: f"{np.median(s.intensity):.3f}")
        row(
            "LiDAR height above ground, pitch, roll",
            lambda s: (
                "n/a"
                if _lidar_mount(s) is None
                else "{:.2f} m, {:.1f} deg, {:.1f} deg".format(*_lidar_mount(s))
            ),
        )
        lines.append("")
    lines += ["## Warnings", ""]
    if not issues:
        lines += ["None.", ""]
    for i in issues:
        lines.append(f"- **{i.severity}** `{i.where}`: {i.message}." + (f" *Fix:* {i.fix}" if i.fix else ""))
    lines.append("")
    if st is not None and st.sizes:
        lines += [
            "## Box sizes (mean length x width x height, m)",
            "",
            "| class | data | source |",
            "|---|---|---|",
        ]
        for cls in sorted(set(st.sizes) | set(src.sizes if src else {})):

            def fmt(s, c=cls):
                if s is None or c not in s.sizes:
                    return ""
                m = s.sizes[c]["mean"]
                return f"{m[0]:.2f} x {m[1]:.2f} x {m[2]:.2f} (n={s.sizes[c]['count']})"

            lines.append(f"| {cls} | {fmt(st)} | {fmt(src)} |")
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for fig in figures:
            lines += [f"### {fig.stem.replace('_', ' ')}", "", f"![{fig.stem}]({fig.name})", ""]
    return "\n".join(lines)
