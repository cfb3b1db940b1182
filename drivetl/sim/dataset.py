"""Simulate a whole dataset: segments of frames through a rig, written as Waymo v1 or v2, or the team format.

Frame g (0-based over the run) belongs to segment g // frames_per_segment; each segment is its own
street (scene seed (seed, segment)), and every frame's noise comes from (seed, segment, frame), so
the output does not depend on the number of workers or on interruptions. Waymo output is written
as shards of `shard_frames` frames, one TFRecord each, written atomically by the Waymo writer;
Waymo v2 output is written a segment at a time (one Parquet file per component per segment, one row
group per frame); team output goes through the team writer frame by frame. Either way a rerun skips
what is complete.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivetl._io import die_with_parent, remove_stale_partials, single_threaded_blas
from drivetl.calib import SensorRig
from drivetl.data.records import FrameKey, FrameRecord
from drivetl.errors import ConfigError
from drivetl.sim.lidar import LidarNoise
from drivetl.sim.regions import region_stats

__all__ = ["FORMATS", "SimSummary", "SimulationPlan", "frame_stats", "simulate_dataset"]

FORMATS: tuple[str, ...] = ("waymo", "waymo-v2", "team")
#: The formats written in Waymo's layout (range images, TOP pixel pose, Waymo sensor names).
WAYMO_FORMATS: tuple[str, ...] = ("waymo", "waymo-v2")
START_US = 1_600_000_000_000_000


@dataclass(frozen=True)
class SimulationPlan:
    """What to simulate. camera_scale resizes every camera (intrinsics scaled with the image; the
    rig written with the data says so)."""

    rig: SensorRig
    frames: int
    out: Path
    format: str = "waymo"
    seed: int = 0
    region: str = "us"
    frames_per_segment: int = 20
    shard_frames: int = 10
    camera_scale: float = 1.0
    noise: LidarNoise = field(default_factory=LidarNoise)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r}: use one of {', '.join(FORMATS)}")
        if self.frames < 1:
            raise ConfigError(f"--frames {self.frames}: simulate at least one frame")
        if self.frames_per_segment % self.shard_frames:
            raise ConfigError(
                f"frames per segment ({self.frames_per_segment}) must be a multiple of the shard size "
                f"({self.shard_frames})"
            )
        if not 0 < self.camera_scale <= 1:
            raise ConfigError(f"--camera-scale {self.camera_scale}: use a value in (0, 1]")
        region_stats(self.region)
        if self.format in WAYMO_FORMATS:
            from drivetl.data.formats.waymo import CAMERA_NAMES, LASER_NAMES

            where = self.rig.source_path or f"rig {self.rig.name}"
            for kind, names, known in (
                ("lidar", [s.name for s in self.rig.lidars], LASER_NAMES),
                ("camera", [c.name for c in self.rig.cameras], CAMERA_NAMES),
            ):
                bad = [n for n in names if n not in known]
                if bad:
                    raise ConfigError(
                        f"{where}: {kind} {bad[0]!r} has no Waymo name ({', '.join(known)}); "
                        "rename it in the rig file or simulate with --format team"
                    )

    def sim_rig(self) -> SensorRig:
        """The rig as simulated (cameras resized by camera_scale)."""
        if self.camera_scale == 1:
            return self.rig
        cams = []
        for cam in self.rig.cameras:
            w, h = max(1, round(cam.width * self.camera_scale)), max(1, round(cam.height * self.camera_scale))
            cams.append(cam.scaled(w / cam.width, h / cam.height))
        return dataclasses.replace(self.rig, cameras=tuple(cams))

    def segment_name(self, segment: int) -> str:
        """The name of simulated street `segment` (seeded, rig and region in it)."""
        return f"sim_{self.rig.name}_{self.region}_s{self.seed}_{segment:05d}"

    def segment_start_us(self, segment: int) -> int:
        """Timestamp of the first frame of street `segment`, microseconds."""
        return START_US + segment * 1_000_000_000

    def key(self, g: int) -> FrameKey:
        """The key of global frame `g` (10 Hz within its street)."""
        s, i = divmod(g, self.frames_per_segment)
        return FrameKey(self.segment_name(s), self.segment_start_us(s) + i * 100_000)

    def shard_path(self, g0: int) -> Path:
        """The Waymo TFRecord shard that starts with global frame `g0`."""
        s, i = divmod(g0, self.frames_per_segment)
        return self.out / f"{self.segment_name(s)}_part{i // self.shard_frames:03d}.tfrecord"


@dataclass
class SimSummary:
    """frames: rendered now; skipped: already complete; points: laser -> first-return points per
    rendered frame; labels: class -> labels over the rendered frames."""

    frames: int = 0
    skipped: int = 0
    points: dict[str, list[int]] = field(default_factory=dict)
    labels: Counter = field(default_factory=Counter)

    def add(self, stats: dict) -> None:
        """Count one rendered frame's points and labels."""
        self.frames += 1
        for name, n in stats["points"].items():
            self.points.setdefault(name, []).append(n)
        self.labels.update(stats["labels"])

    def lines(self) -> list[str]:
        """The summary as printable lines."""
        out = [f"frames simulated: {self.frames}, already present (skipped): {self.skipped}"]
        for name, counts in self.points.items():
            out.append(f"{name}: {np.mean(counts):,.0f} first-return points per frame")
        if self.frames:
            per = ", ".join(f"{c} {n / self.frames:.1f}" for c, n in sorted(self.labels.items()))
            out.append(f"labels per frame: {sum(self.labels.values()) / self.frames:.1f} ({per or 'none'})")
        return out


def frame_stats(record: FrameRecord) -> dict:
    """Per-frame summary: first-return points per laser, labels per class."""
    pts = {}
    for name, lp in record.lidars.items():
        ret = lp.column("return_index") if "return_index" in lp.columns else np.zeros(len(lp))
        pts[name] = int(np.sum(ret == 0))
    return {"points": pts, "labels": dict(Counter(record.boxes.classes))}


# ---------------------------------------------------------------------- workers
_WORKER: dict = {}


def _worker_init(plan: SimulationPlan, threads: int = 0, parent: int | None = None) -> None:
    """Set up a worker; threads: ray-casting threads (1 where worker processes share the cores;
    numpy's BLAS then runs on one thread too); parent: the pid of the run, when this is a pool
    worker (it dies with the run)."""
    from drivetl.sim.frame import RigSimulator

    if parent is not None:
        die_with_parent(parent)
    if threads == 1:
        single_threaded_blas()

    _WORKER["plan"] = plan
    _WORKER["threads"] = threads
    _WORKER["sim"] = RigSimulator(
        plan.sim_rig(), waymo_layout=plan.format in WAYMO_FORMATS, noise=plan.noise
    )
    _WORKER["caster"] = (None, None)


def _caster(segment: int):
    from drivetl.sim._raycast import SceneCaster
    from drivetl.sim.frame import FRAME_PERIOD
    from drivetl.sim.scene import generate_scene

    plan = _WORKER["plan"]
    cached_seg, caster = _WORKER["caster"]
    if cached_seg != segment:
        scene = generate_scene(
            [plan.seed, segment], plan.region, duration=plan.frames_per_segment * FRAME_PERIOD + 0.2
        )
        caster = SceneCaster(scene, threads=_WORKER["threads"])
        _WORKER["caster"] = (segment, caster)
    return caster


def _render(g: int):
    plan: SimulationPlan = _WORKER["plan"]
    s, i = divmod(g, plan.frames_per_segment)
    return _WORKER["sim"].render(
        _caster(s),
        i,
        segment=plan.segment_name(s),
        start_us=plan.segment_start_us(s),
        seed=plan.seed * 1_000_003 + s,
    )


def _waymo_shard(frames: list[int]) -> list[dict]:
    from drivetl.data.formats.waymo import RangeImageData, WaymoWriter

    plan: SimulationPlan = _WORKER["plan"]
    stats = []
    with WaymoWriter(plan.shard_path(frames[0])) as writer:
        for g in frames:
            f = _render(g)
            ri = {n: RangeImageData(n, s.range_image, s.pixel_pose) for n, s in f.scans.items()}
            writer.write(f.record, ri)
            stats.append(frame_stats(f.record))
    return stats


def _waymo_v2_segment(frames: list[int]) -> list[dict]:
    """Render one segment's frames into its Waymo v2 files (finished together at the end)."""
    from drivetl.data.formats.waymo import RangeImageData, WaymoV2Writer

    plan: SimulationPlan = _WORKER["plan"]
    stats = []
    with WaymoV2Writer(plan.out) as writer:
        for g in frames:
            f = _render(g)
            ri = {n: RangeImageData(n, s.range_image, s.pixel_pose) for n, s in f.scans.items()}
            writer.write(f.record, ri)
            stats.append(frame_stats(f.record))
    return stats


def _team_frames(frames: list[int]) -> list[tuple]:
    out = []
    for g in frames:
        r = _render(g).record
        out.append((r.key, dict(r.lidars), dict(r.cameras), r.boxes, r.world_from_vehicle))
    return out


def _run(plan: SimulationPlan, workers: int, fn: Callable, jobs: list[list[int]]) -> Iterator:
    if workers <= 1 or len(jobs) <= 1:
        _worker_init(plan)
        for job in jobs:
            yield fn(job)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(jobs)), initializer=_worker_init, initargs=(plan, 1, os.getpid())) as pool:
        yield from pool.imap(fn, jobs)


def simulate_dataset(
    plan: SimulationPlan, workers: int = 1, progress: Callable[[int], None] | None = None
) -> SimSummary:
    """Simulate `plan.frames` frames into `plan.out`; returns the summary. `progress(n)` is called
    with the number of frames finished (rendered or skipped) as they finish."""
    advance = progress or (lambda n: None)
    summary = SimSummary()
    plan.out.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(plan.out)  # a killed run's half-written files
    if plan.format == "waymo":
        jobs = []
        for g0 in range(0, plan.frames, plan.shard_frames):
            frames = list(range(g0, min(g0 + plan.shard_frames, plan.frames)))
            if plan.shard_path(g0).is_file():
                summary.skipped += len(frames)
                advance(len(frames))
            else:
                jobs.append(frames)
        for stats in _run(plan, workers, _waymo_shard, jobs):
            for st in stats:
                summary.add(st)
            advance(len(stats))
        return summary
    if plan.format == "waymo-v2":
        from drivetl.data.formats.waymo._v2_writer import segment_complete

        jobs = []
        for g0 in range(0, plan.frames, plan.frames_per_segment):
            frames = list(range(g0, min(g0 + plan.frames_per_segment, plan.frames)))
            if segment_complete(plan.out, plan.segment_name(g0 // plan.frames_per_segment)):
                summary.skipped += len(frames)
                advance(len(frames))
            else:
                jobs.append(frames)
        for stats in _run(plan, workers, _waymo_v2_segment, jobs):
            for st in stats:
                summary.add(st)
            advance(len(stats))
        return summary

    from drivetl.data.formats.team import TeamWriter
    from drivetl.data.records import FrameRecord

    rig = plan.sim_rig()
    with TeamWriter(plan.out, rig) as writer:
        jobs = []
        for s0 in range(0, plan.frames, plan.frames_per_segment):
            todo = []
            for g in range(s0, min(s0 + plan.frames_per_segment, plan.frames)):
                key = plan.key(g)
                if writer.has(key):
                    writer.add_to_split(key, "train")
                    summary.skipped += 1
                    advance(1)
                else:
                    todo.append(g)
            for k in range(0, len(todo), plan.shard_frames):
                jobs.append(todo[k : k + plan.shard_frames])
        for results in _run(plan, workers, _team_frames, jobs):
            for key, lidars, cameras, boxes, pose in results:
                record = FrameRecord(key, rig, lidars, cameras, boxes, pose)
                writer.write(record, "train")
                summary.add(frame_stats(record))
                advance(1)
    return summary
