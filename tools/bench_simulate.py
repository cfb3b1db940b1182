"""Benchmark `drivetl simulate`'s renderer: frames/s for the TOP-only Waymo-like LiDAR (64 x 2650)
plus one 480 x 320 camera, on the cores this process may use (run under `taskset -c 0,1` for 2 cores).

Baseline: the straightforward renderer: every frame, one ray-casting scene is built from the whole
world (static street + moving actors posed at that time) and every ray is cast against it.
Ours: the static street's ray-casting scene is built once per segment and reused; only the moving
actors are rebuilt per frame, and only rays whose tile cone can reach a moving actor are cast
against them. Both produce the same frames (checked to float rounding). Also reported: ours with N
worker processes (what `drivetl simulate --workers N` does), and ours including the Waymo v1 writer.

    taskset -c 0,1 python tools/bench_simulate.py [--frames 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from drivetl.calib import load_rig
from drivetl.sim import RigSimulator, SceneCaster, generate_scene
from drivetl.sim._raycast import _build

RIG = Path(__file__).resolve().parents[1] / "configs" / "rigs" / "waymo_like.yaml"


def bench_rig():
    rig = load_rig(RIG)
    cam = rig.camera("FRONT")
    cam = cam.scaled(480 / cam.width, 320 / cam.height)
    return dataclasses.replace(rig, lidars=(rig.lidar("TOP"),), cameras=(cam,))


class NaiveCaster(SceneCaster):
    """The baseline: one ray-casting scene of everything, rebuilt per frame; all rays cast once."""

    def set_time(self, t: float) -> None:
        if self._time == t:
            return
        super().set_time(t)
        world_from_actor = self.scene.world_from_road[None] @ self.scene.actor_poses(t, self._ids)
        verts = np.einsum("nij,nj->ni", world_from_actor[self._owner, :3, :3], self._local)
        verts += world_from_actor[self._owner, :3, 3]
        stat = self.scene.static_mesh
        self._static = _build(
            np.concatenate([stat.vertices, verts]),
            np.concatenate([stat.triangles, self._tris + len(stat.vertices)]),
        )
        self._static_mat = np.concatenate([stat.materials, self._dyn_mat])
        self._static_actor = np.concatenate([self.scene.static_actor, self._dyn_actor])
        self._dynamic = None


def _time_frames(
    sim: RigSimulator, caster: SceneCaster, frames: int
) -> tuple[list[float], list[float], list]:
    """(wall seconds per frame, CPU seconds per frame (all threads), frames)."""
    out, wall, cpu = [], [], []
    for i in range(frames):
        t0, c0 = time.perf_counter(), time.process_time()
        out.append(sim.render(caster, i, segment="bench", start_us=0))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu, out


def _worker(args: tuple[int, int]) -> int:
    seed, frames = args
    sim = RigSimulator(bench_rig(), waymo_layout=True)
    caster = SceneCaster(generate_scene(seed))
    for i in range(frames):
        sim.render(caster, i, segment="bench", start_us=0)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    print(
        f"cores available: {cores} (load average {load:.1f}); rig: TOP 64x2650 + FRONT 480x320; "
        f"{args.frames} frames of one segment"
    )
    rig = bench_rig()
    sim = RigSimulator(rig, waymo_layout=True)
    t0 = time.perf_counter()
    scene = generate_scene(args.seed)
    scene_time = time.perf_counter() - t0
    sim.render(SceneCaster(generate_scene(args.seed + 1)), 0, segment="warm", start_us=0)  # imports, caches
    t0 = time.perf_counter()
    caster = SceneCaster(scene)
    sim.render(caster, 0, segment="bench", start_us=0)
    setup = time.perf_counter() - t0 + scene_time
    naive = NaiveCaster(scene)
    base_t, base_cpu, base_frames = _time_frames(sim, naive, args.frames)
    ours_t, ours_cpu, ours_frames = _time_frames(sim, caster, args.frames)
    for a, b in zip(base_frames, ours_frames, strict=True):
        same = np.isclose(a.scans["TOP"].range_image, b.scans["TOP"].range_image, atol=1e-4).all(-1)
        assert same.mean() > 0.999
        # ties between coincident triangles may resolve differently in the two ray-casting scenes
        assert (np.abs(a.images["FRONT"].rgb.astype(int) - b.images["FRONT"].rgb).max(-1) > 1).mean() < 1e-3
    b_med, o_med = statistics.median(base_t), statistics.median(ours_t)
    rate = "median {:7.1f} ms/frame = {:5.1f} frames/s"
    cpu = "; CPU {:6.1f} ms/frame (all threads)"
    print(
        "baseline (rebuild everything per frame):",
        rate.format(b_med * 1e3, 1 / b_med) + cpu.format(statistics.median(base_cpu) * 1e3),
    )
    print(
        "ours (static scene reused, culled):     ",
        rate.format(o_med * 1e3, 1 / o_med) + cpu.format(statistics.median(ours_cpu) * 1e3),
    )
    print(
        f"ratio baseline/ours: {b_med / o_med:.2f}x; segment setup (scene, first frame): {setup * 1e3:.0f} ms"
    )
    pts = np.mean([len(f.record.lidars["TOP"].points) for f in ours_frames])
    print(
        f"points per frame (both returns): {pts:,.0f}; labels per frame: "
        f"{np.mean([len(f.record.boxes) for f in ours_frames]):.1f}"
    )

    from drivetl.data.waymo import RangeImageData, WaymoWriter

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with WaymoWriter(Path(tmp) / "bench.tfrecord") as writer:
            for i in range(args.frames):
                f = sim.render(caster, i, segment="bench", start_us=0)
                writer.write(
                    f.record, {n: RangeImageData(n, s.range_image, s.pixel_pose) for n, s in f.scans.items()}
                )
        e2e = (time.perf_counter() - t0) / args.frames
    print("ours + Waymo writer (zlib range images, JPEG, labels):", rate.format(e2e * 1e3, 1 / e2e))

    if args.workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers) as pool:
            pool.map(_worker, [(s, 1) for s in range(args.workers)])  # start-up and imports
            t0 = time.perf_counter()
            done = sum(pool.map(_worker, [(s, args.frames) for s in range(args.workers)]))
            wall = time.perf_counter() - t0
        print(f"ours, {args.workers} worker processes (incl. scene generation): {done / wall:.1f} frames/s")


if __name__ == "__main__":
    main()
