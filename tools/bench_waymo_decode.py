"""Benchmark: Waymo frame -> vehicle-frame points, v1 and v2, against the zlib-inflate floor, in one run.

Builds a full-size synthetic frame with drivetl's own writers (TOP 64x2650 with per-pixel pose, four
200x600 side lasers, two returns, about a million points) as a v1 TFRecord and a v2 folder, then times,
interleaved (so machine load hits all alike), per frame:

- zlib floor: zlib-inflating every range image and the pixel pose one after another on one core;
- new inflate: the same blobs through drivetl's inflate (libdeflate when `deflate` is installed), one
  core; and ISA-L (`isal`) when it is installed, for comparison;
- drivetl v1 decode: parse the record and decode all points (inflated in parallel threads), and with 1
  thread;
- drivetl v2 decode: read the frame's row groups from the Parquet files and decode all points.

Prints medians, frames/s, the ratios to the zlib floor (goal: v1 decode <= 0.6x) and, for reference, to
the official converter's 860 ms per full-size frame measured separately (tools/compare_waymo_official.py;
goal >= 25x), with the load average (as `uptime` shows it) before and after.

    python tools/bench_waymo_decode.py [--repeats 15] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

from drivetl.data.formats._tfrecord import TFRecordReader
from drivetl.data.formats.waymo import (
    WaymoFrame,
    WaymoV1Reader,
    WaymoV2Reader,
    WaymoV2Writer,
    WaymoWriter,
    _zlib,
    parse_frame,
)
from drivetl.data.formats.waymo._decode import default_threads
from drivetl.data.formats.waymo._synthetic import synthetic_frame

#: The official converter (TensorFlow 2.13, frame_utils) on full-size frames, ms per frame, as measured
#: on a quiet 2-core machine; not run here (it needs TensorFlow): pass --official-ms with the time
#: tools/compare_waymo_official.py measures on yours.
OFFICIAL_MS = 860.0


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f} ({len(os.sched_getaffinity(0))} cores)"


def _median_times(fns, repeats: int) -> list[float]:
    """Median seconds of each function; runs are interleaved so machine load hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--stream-frames", type=int, default=20, help="frames in the streaming-memory check")
    ap.add_argument("--official-ms", type=float, default=OFFICIAL_MS, help="official converter, ms/frame")
    ap.add_argument("--small", action="store_true", help="a small frame (checks the script runs; no figures)")
    args = ap.parse_args()
    load_before = _load()

    shapes = {"top_shape": (16, 200), "side_shape": (20, 60)} if args.small else {}
    record, range_images = synthetic_frame(seed=0, **shapes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.tfrecord"
        with WaymoWriter(path) as writer:
            writer.write(record, range_images)
        with WaymoV2Writer(Path(tmp) / "v2") as writer:
            writer.write(record, range_images)
        data = next(iter(TFRecordReader(path)))
        proto = parse_frame(data, "bench")
        blobs = []
        for laser in proto.lasers:
            for ri in (laser.ri_return1, laser.ri_return2):
                blobs += [b for b in (ri.range_image_compressed, ri.range_image_pose_compressed) if b]
        compressed = sum(len(b) for b in blobs)
        inflated = sum(len(zlib.decompress(b)) for b in blobs)
        backend = _zlib.backend()
        for b in blobs:  # the new inflate gives zlib's bytes
            if bytes(_zlib.inflate(b)) != zlib.decompress(b):
                raise SystemExit("bench_waymo_decode: the inflate backend disagrees with zlib")

        def floor() -> None:
            for b in blobs:
                zlib.decompress(b)

        def new_inflate() -> None:
            for b in blobs:
                _zlib.inflate(b)

        def ours_threads(threads: int):
            def run() -> int:
                frame = WaymoFrame(parse_frame(data, "bench"), where="bench", threads=threads)
                return len(frame.points())

            return run

        v2_reader = WaymoV2Reader(Path(tmp) / "v2", threads=args.threads)

        def v2_decode() -> int:
            return len(v2_reader[0].points())

        fns = {
            "floor": floor,
            "inflate": new_inflate,
            "v1": ours_threads(args.threads),
            "v1_1": ours_threads(1),
            "v2": v2_decode,
        }
        try:
            from isal import isal_zlib

            fns["isal"] = lambda: [isal_zlib.decompress(b) for b in blobs]
        except ImportError:
            pass
        n_points = ours_threads(1)()  # warm the per-calibration ray cache
        if v2_decode() != n_points:
            raise SystemExit("bench_waymo_decode: v2 and v1 decode different point counts")
        ours_threads(args.threads)()
        t = dict(zip(fns, _median_times(list(fns.values()), args.repeats), strict=True))

        # Streaming memory: peak Python-tracked allocation while reading many frames stays ~one frame.
        many = Path(tmp) / "many.tfrecord"
        with WaymoWriter(many, level=1) as writer:
            for i in range(args.stream_frames):
                key = dataclasses.replace(record.key, timestamp_us=record.key.timestamp_us + i)
                writer.write(dataclasses.replace(record, key=key), range_images)
        tracemalloc.start()
        for frame in WaymoV1Reader(many, threads=args.threads):
            frame.points()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    def line(label: str, seconds: float) -> str:
        return (
            f"{label:44s}: {seconds * 1e3:8.1f} ms  ({1 / seconds:6.1f} frames/s, "
            f"{seconds / t['floor']:.2f}x the zlib floor)"
        )

    small = " (--small: a check that the script runs; its figures mean nothing)" if args.small else ""
    print(
        f"frame: {len(blobs)} compressed matrices, {compressed / 1e6:.1f} MB -> {inflated / 1e6:.1f} MB, "
        f"{n_points:,} points{small}"
    )
    print(f"before: {load_before}")
    print(f"{'zlib floor (inflate, 1 core, sequential)':44s}: {t['floor'] * 1e3:8.1f} ms  (median per frame)")
    print(line(f"new inflate ({backend}, 1 core, sequential)", t["inflate"]))
    if "isal" in t:
        print(line("ISA-L inflate (isal, 1 core, sequential)", t["isal"]))
    print(line(f"drivetl v1 decode, {args.threads} threads", t["v1"]))
    print(line("drivetl v1 decode, 1 thread", t["v1_1"]))
    print(line(f"drivetl v2 decode (Parquet), {args.threads} threads", t["v2"]))
    print(
        f"ratio v1 decode / zlib floor: {t['v1'] / t['floor']:.2f}x ({args.threads} threads), goal <= 0.6x; "
        f"v2 decode / zlib floor: {t['v2'] / t['floor']:.2f}x"
    )
    official = args.official_ms
    print(
        f"against the official converter's {official:.0f} ms per frame (measured separately): "
        f"v1 {official / 1e3 / t['v1']:.1f}x, v2 {official / 1e3 / t['v2']:.1f}x faster; goal >= 25x"
    )
    print(f"after: {_load()}")
    print(
        f"streaming {args.stream_frames} frames: peak traced memory {peak / 1e6:.0f} MB "
        f"(one frame inflated: {inflated / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
