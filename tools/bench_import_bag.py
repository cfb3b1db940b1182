"""Benchmark `drivetl import bag`: frames/s and peak memory importing a simulated fleet_xt32 log.

A few frames of configs/rigs/fleet_xt32.yaml are simulated (cameras at --camera-scale), then repeated
with advancing timestamps into a --frames-frame ROS 1 bag (Hesai point layout: ~55,000 points per
sweep, CompressedImage, CameraInfo, tf). Baseline: reading the same LiDAR, camera and tf messages
and deserializing them with rosbags, nothing decoded or written (the floor any importer pays).
Ours: the whole import into a team folder (PointCloud2 decoding, image pairing, PCD and JPEG files,
frame files). Each runs in its own process: its peak resident memory (ru_maxrss), how far that rose
above the peak after imports, and the peak of the work's own allocations (tracemalloc) are printed.
The machine's load average is printed beside the figures: on a shared machine they move with it.

    python tools/bench_import_bag.py [--frames 1000] [--container ros1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_log(path: Path, frames: int, container: str, camera_scale: float, unique: int) -> dict:
    from drivetl.calib import load_rig
    from drivetl.data.formats.bag import write_log
    from drivetl.data.formats.team import TeamReader
    from drivetl.data.records import FrameKey
    from drivetl.sim.dataset import SimulationPlan, simulate_dataset
    from drivetl.sim.lidar import LidarNoise

    team = path.parent / "sim"
    rig = load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml")
    plan = SimulationPlan(
        rig,
        unique,
        team,
        format="team",
        camera_scale=camera_scale,
        noise=LidarNoise(motion=False),
        frames_per_segment=unique,
        shard_frames=unique,
    )
    simulate_dataset(plan)
    reader = TeamReader(team)
    base = list(reader)
    t0 = base[0].key.timestamp_us

    def records():
        for i in range(frames):
            r = base[i % len(base)]
            yield dataclasses.replace(r, key=FrameKey("bench", t0 + 100_000 * i))

    return write_log(path, reader.rig, records(), container=container)


def child(mode: str, log: str, out: str, lidar: str, camera: str) -> None:
    import tracemalloc

    from drivetl.data.formats.bag import LogReader, LogSelection, Topic, import_bag

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after imports
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the work's own peak allocation
    t = time.perf_counter()
    if mode == "baseline":
        n = 0
        with LogReader(log) as reader:
            for m in reader.messages([lidar, camera, "/tf", "/tf_static", "/front/camera_info"]):
                n += m.topic == lidar
    else:
        sel = LogSelection(Topic(lidar, "TOP"), (Topic(camera, "FRONT"),))
        n = import_bag(log, out, sel)["frames"]
    wall = time.perf_counter() - t
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"frames": n, "wall_s": wall, "peak_rss_mib": rss, "growth_mib": rss - rss0, "traced_mib": traced}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--unique", type=int, default=5, help="simulated frames repeated into the log")
    ap.add_argument("--container", default="ros1")
    ap.add_argument("--camera-scale", type=float, default=0.5)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        suffix = {"ros1": ".bag", "mcap-ros1": ".mcap", "mcap-cdr": ".mcap"}.get(args.container, "")
        log = Path(tmp) / f"drive{suffix}"
        t = time.perf_counter()
        info = make_log(log, args.frames, args.container, args.camera_scale, args.unique)
        size = sum(p.stat().st_size for p in ([log] if log.is_file() else log.rglob("*")) if p.is_file())
        print(
            f"log: {args.frames} frames, {args.container}, {size / 2**20:.0f} MiB, "
            f"written in {time.perf_counter() - t:.1f} s"
        )
        lidar, camera = info["lidar_topics"]["TOP"], info["camera_topics"]["FRONT"]
        results = {}
        for mode in ("baseline", "ours"):
            cmd = [sys.executable, __file__, "--child", mode, str(log), str(Path(tmp) / "out"), lidar, camera]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
            results[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        head = ("", "frames", "wall s", "frames/s", "peak RSS MiB", "over imports", "traced peak")
        print(
            f"{head[0]:10s} {head[1]:>7s} {head[2]:>8s} {head[3]:>9s} "
            + " ".join(f"{h:>13s}" for h in head[4:])
        )
        for mode, r in results.items():
            print(
                f"{mode:10s} {r['frames']:7d} {r['wall_s']:8.1f} {r['frames'] / r['wall_s']:9.1f} "
                f"{r['peak_rss_mib']:13.0f} {r['growth_mib']:13.0f} {r['traced_mib']:13.1f}"
            )
        b, o = results["baseline"], results["ours"]
        print(f"ours / baseline wall time: {o['wall_s'] / b['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
