"""Benchmark `drivetl simulate`'s renderer: frames/s for the TOP-only Waymo-like LiDAR (64 x 2650)
plus one 480 x 320 camera, on the cores this process may use (run under `taskset -c 0,1` for 2 cores).

Baseline: the renderer as first committed (`BASELINE_COMMIT`), loaded from git into this process
under another package name: static scene reused, a second cast of the rays whose tile cone reaches
a moving actor against a per-frame scene of those actors, float64 numpy shading, BLAS (N, 3)
products, one label loop per box. Ours: the current `drivetl.sim` (one ray-casting scene of the
static street and the posed actors per frame, every ray cast once; float32 shading with a cached
sky, table-driven Gaussian noise, row gathers with `np.take`, vectorized labels with a range test,
no BLAS on point arrays). Frames of the two alternate, so that the load of a shared machine hits both
alike; wall and CPU (all threads) milliseconds per frame are reported, with medians and ratios. A
check renders frames with every random choice off through both and compares them (same returns,
pixels, labels). Also reported: the CPU time of open3d's `cast_rays` alone on one frame's rays (the
floor of any renderer that casts them, and the frames/s it caps), ours with N worker processes
(`drivetl simulate --workers N`, one ray-casting thread each) and ours including the Waymo v1 writer,
whose range-image compression goes through zlib or libdeflate (both timed, same level; the streams
checked to inflate with Python's zlib), plus that compression alone on the rendered range images.

    taskset -c 0,1 python tools/bench_simulate.py [--frames 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from drivetl.calib import load_rig
from drivetl.sim import LidarNoise, RigSimulator, SceneCaster, generate_scene

ROOT = Path(__file__).resolve().parents[1]
RIG = ROOT / "configs" / "rigs" / "waymo_like.yaml"
#: The commit whose `drivetl/sim` is the baseline.
BASELINE_COMMIT = "1f4c97a"
_BASELINE = "drivetl_sim_baseline"


def bench_rig():
    rig = load_rig(RIG)
    cam = rig.camera("FRONT")
    cam = cam.scaled(480 / cam.width, 320 / cam.height)
    return dataclasses.replace(rig, lidars=(rig.lidar("TOP"),), cameras=(cam,))


def load_baseline(directory: Path):
    """The baseline commit's `drivetl/sim`, written under `directory` and imported as a package named
    `_BASELINE` (its own `drivetl.sim` imports renamed; everything else it imports is today's)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
        ).stdout

    try:
        files = git("ls-tree", "--name-only", BASELINE_COMMIT, "drivetl/sim/").split()
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(
            f"bench_simulate: cannot read commit {BASELINE_COMMIT} with git ({e}); run it in a clone"
        ) from None
    pkg = directory / _BASELINE
    pkg.mkdir()
    for f in files:
        (pkg / Path(f).name).write_text(
            git("show", f"{BASELINE_COMMIT}:{f}").replace("drivetl.sim", _BASELINE)
        )
    spec = importlib.util.spec_from_file_location(
        _BASELINE, pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[_BASELINE] = module
    spec.loader.exec_module(module)
    return module


def _timed(fn) -> tuple[float, float, object]:
    """(wall s, CPU s of all threads, result) of fn()."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def _compare(base, rig, seed: int, frames: int) -> None:
    """Render frames through both renderers with every random choice off (no noise, no dropouts,
    glass and foliage opaque, no second returns: what is left is geometry, intensity and shading)
    and check that they agree."""
    import drivetl.sim.lidar as ours_lidar

    saved = [(m, m._MATS, m._TRANSMISSION) for m in (ours_lidar, base.lidar)]
    for m, mats, _ in saved:
        m._MATS = {**mats, "transmission": np.zeros_like(mats["transmission"])}
        m._TRANSMISSION = np.zeros_like(m._TRANSMISSION)
    try:
        noise = dict(range_sigma=0.0, dropout=0.0, weak_return=0.0, edge_second_return=0.0)
        ours = RigSimulator(rig, waymo_layout=True, noise=LidarNoise(**noise), camera_noise=0.0)
        theirs = base.RigSimulator(rig, waymo_layout=True, noise=base.LidarNoise(**noise), camera_noise=0.0)
        c_ours, c_base = SceneCaster(generate_scene(seed)), base.SceneCaster(base.generate_scene(seed))
        same_ri, same_px, labels = [], [], []
        for i in range(frames):
            a = theirs.render(c_base, i, segment="check", start_us=0)
            b = ours.render(c_ours, i, segment="check", start_us=0)
            ra, rb = a.scans["TOP"].range_image, b.scans["TOP"].range_image
            same_ri.append(np.isclose(ra, rb, atol=1e-3).all(-1).mean())
            rgb_a, rgb_b = a.images["FRONT"].rgb.astype(int), b.images["FRONT"].rgb
            same_px.append((np.abs(rgb_a - rgb_b).max(-1) <= 1).mean())
            ba, bb = a.record.boxes, b.record.boxes
            labels.append(ba.ids == bb.ids and np.abs(ba.num_points - bb.num_points).max(initial=0) <= 2)
    finally:
        for m, mats, transmission in saved:
            m._MATS, m._TRANSMISSION = mats, transmission
    print(
        f"check, {frames} frames without random choices: range-image pixels equal {min(same_ri):.5f}, "
        f"camera pixels within 1 level {min(same_px):.5f}, same labels and point counts (+-2): {all(labels)}"
    )
    if min(same_ri) < 0.999 or min(same_px) < 0.995 or not all(labels):
        raise SystemExit("bench_simulate: ours and the baseline disagree")


def _worker(args: tuple[int, int]) -> int:
    seed, frames = args
    sim = RigSimulator(bench_rig(), waymo_layout=True)
    caster = SceneCaster(generate_scene(seed), threads=1)  # the processes share the cores
    for i in range(frames):
        sim.render(caster, i, segment="bench", start_us=0)
    return frames


class _RecordingCaster(SceneCaster):
    """A `SceneCaster` that keeps a copy of every batch of rays it casts."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[np.ndarray] = []

    def cast_rays(self, rays: np.ndarray):
        self.recorded.append(rays.copy())
        return super().cast_rays(rays)


def casting_floor(rig, seed: int, frame: int = 1, repeats: int = 5) -> tuple[float, list[tuple[int, float]]]:
    """CPU seconds per frame that open3d's `cast_rays` alone takes for one frame's rays (one thread,
    the frame's scene, median of `repeats`), and (rays, seconds) per cast: the part of a frame no
    change to our own code can remove."""
    from drivetl.sim import _raycast

    caster = _RecordingCaster(generate_scene(seed), threads=1)
    RigSimulator(rig, waymo_layout=True).render(caster, frame, segment="floor", start_us=0)
    per_cast = []
    for rays in caster.recorded:
        tensor = _raycast._tensor(rays)
        times = []
        for _ in range(repeats):
            c0 = time.process_time()
            caster._rc.cast_rays(tensor, nthreads=1)
            times.append(time.process_time() - c0)
        per_cast.append((len(rays), statistics.median(times)))
    return sum(t for _, t in per_cast), per_cast


def _zlib_backends() -> list[str]:
    from drivetl.data.formats.waymo import _zlib

    return ["zlib", "libdeflate"] if _zlib.libdeflate_available() else ["zlib"]


def writer_compression(frames, repeats: int = 3) -> None:
    """The Waymo writer's range-image compression alone (what dominates writing a frame), zlib against
    libdeflate at the same level, on the rendered frames' range images and pixel poses: CPU ms per
    frame (medians of `repeats`, the two interleaved), compressed size, and a check that Python's zlib
    inflates libdeflate's streams to the same bytes."""
    from drivetl.data.formats.waymo import _zlib
    from drivetl.data.formats.waymo._matrix import serialize_matrix_float

    raws = []
    for f in frames:
        for s in f.scans.values():
            raws += [serialize_matrix_float(ri) for ri in s.range_image]
            if s.pixel_pose is not None:
                raws.append(serialize_matrix_float(s.pixel_pose))
    names = _zlib_backends()
    cpu: dict[str, list[float]] = {n: [] for n in names}
    size: dict[str, int] = {}
    for _ in range(repeats):
        for name in names:
            c0 = time.process_time()
            out = [_zlib.compress(r, 6, backend_name=name) for r in raws]
            cpu[name].append((time.process_time() - c0) / len(frames))
            size[name] = sum(len(b) for b in out)
            if any(zlib.decompress(b) != r for b, r in zip(out, raws, strict=True)):
                raise SystemExit(f"bench_simulate: zlib does not inflate the {name} streams to their input")
    med = {n: statistics.median(v) for n, v in cpu.items()}
    mb = sum(len(r) for r in raws) / len(frames) / 1e6
    for name in names:
        print(
            f"writer compression, level 6, {name:10s}: {med[name] * 1e3:7.1f} CPU-ms/frame "
            f"({mb:.1f} MB -> {size[name] / len(frames) / 1e6:.2f} MB per frame)"
        )
    if len(names) == 2:
        print(f"ratio zlib/libdeflate compression CPU: {med['zlib'] / med['libdeflate']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(
        f"cores available: {cores} (load average {os.getloadavg()[0]:.1f}); rig: TOP 64x2650 + FRONT "
        f"480x320; {args.frames} frames of one segment; baseline = drivetl/sim at {BASELINE_COMMIT}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = load_baseline(Path(tmp))
        rig = bench_rig()
        _compare(base, rig, args.seed, 3)
        sims = {
            "baseline": (
                base.RigSimulator(rig, waymo_layout=True),
                base.SceneCaster(base.generate_scene(args.seed)),
            ),
            "ours": (RigSimulator(rig, waymo_layout=True), SceneCaster(generate_scene(args.seed))),
        }
        wall: dict[str, list[float]] = {k: [] for k in sims}
        cpu: dict[str, list[float]] = {k: [] for k in sims}
        frames: list = []
        for sim, caster in sims.values():  # first frame: imports, lazy tables, the static scene
            sim.render(caster, 0, segment="warm", start_us=0)
        for i in range(args.frames):
            for name, (sim, caster) in sims.items():
                w, c, f = _timed(lambda s=sim, k=caster, i=i: s.render(k, i, segment="bench", start_us=0))
                wall[name].append(w)
                cpu[name].append(c)
                if name == "ours":
                    frames.append(f)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in sims}
    for name, label in (("baseline", "baseline (committed renderer)"), ("ours", "ours")):
        w, c = med[name]
        print(
            f"{label:30s} median {w * 1e3:7.1f} ms/frame = {1 / w:5.1f} frames/s; CPU {c * 1e3:6.1f} ms/frame"
        )
    print(
        f"ratio baseline/ours: wall {med['baseline'][0] / med['ours'][0]:.2f}x, "
        f"CPU {med['baseline'][1] / med['ours'][1]:.2f}x; at ours' CPU time, {cores} idle cores would give "
        f"{cores / med['ours'][1]:.1f} frames/s"
    )
    floor, per_cast = casting_floor(rig, args.seed)
    casts = ", ".join(f"{n:,} rays {t * 1e3:.1f} ms" for n, t in per_cast)
    print(
        f"open3d cast_rays alone (1 thread): {floor * 1e3:.1f} CPU-ms/frame ({casts}); even with everything "
        f"else free, {cores} cores would give at most {cores / floor:.1f} frames/s"
    )
    pts = np.mean([len(f.record.lidars["TOP"].points) for f in frames])
    print(
        f"points per frame (both returns): {pts:,.0f}; labels per frame: "
        f"{np.mean([len(f.record.boxes) for f in frames]):.1f}"
    )

    writer_compression(frames)
    from drivetl.data.formats.waymo import RangeImageData, WaymoWriter, _zlib

    sim, caster = sims["ours"]
    for name in _zlib_backends():
        _zlib.set_backend(name)
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            with WaymoWriter(Path(tmp) / "bench.tfrecord") as writer:
                for i in range(args.frames):
                    f = sim.render(caster, i, segment="bench", start_us=0)
                    writer.write(
                        f.record,
                        {n: RangeImageData(n, s.range_image, s.pixel_pose) for n, s in f.scans.items()},
                    )
            e2e, e2e_cpu = (time.perf_counter() - t0) / args.frames, (time.process_time() - c0) / args.frames
        print(
            f"ours + Waymo writer ({name} range images, JPEG, labels): mean {e2e * 1e3:7.1f} ms/frame = "
            f"{1 / e2e:5.1f} frames/s; CPU {e2e_cpu * 1e3:6.1f} ms/frame"
        )
    _zlib.set_backend("auto")

    if args.workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers) as pool:
            pool.map(_worker, [(s, 1) for s in range(args.workers)])  # start-up and imports
            t0 = time.perf_counter()
            done = sum(pool.map(_worker, [(s, args.frames) for s in range(args.workers)]))
            elapsed = time.perf_counter() - t0
        print(
            f"ours, {args.workers} worker processes (incl. scene generation): {done / elapsed:.1f} frames/s"
        )


if __name__ == "__main__":
    main()
