"""Benchmark: Waymo v1 frame -> vehicle-frame points, against the zlib-inflate floor, in one run.

Builds a full-size synthetic frame with drivetl's own writer (TOP 64x2650 with per-pixel pose, four
200x600 side lasers, two returns, about a million points), then times, on the same serialized
record: (a) the floor: zlib-inflating every range image and the pixel pose one after another on one
core, and (b) drivetl: parse the record and decode all points (range images inflated in parallel
threads). Prints medians, frames/s, points/s and the ratio (b)/(a). The official converter is not run
here (it needs TensorFlow); see tools/compare_waymo_official.py.

    python tools/bench_waymo_decode.py [--repeats 15] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

from drivetl.data.formats._tfrecord import TFRecordReader
from drivetl.data.formats.waymo import WaymoFrame, WaymoV1Reader, WaymoWriter, parse_frame
from drivetl.data.formats.waymo._decode import default_threads
from drivetl.data.formats.waymo._synthetic import synthetic_frame


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
    args = ap.parse_args()

    record, range_images = synthetic_frame(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.tfrecord"
        with WaymoWriter(path) as writer:
            writer.write(record, range_images)
        data = next(iter(TFRecordReader(path)))
        proto = parse_frame(data, "bench")
        blobs = []
        for laser in proto.lasers:
            for ri in (laser.ri_return1, laser.ri_return2):
                blobs += [b for b in (ri.range_image_compressed, ri.range_image_pose_compressed) if b]
        compressed = sum(len(b) for b in blobs)
        inflated = sum(len(zlib.decompress(b)) for b in blobs)

        def floor() -> None:
            for b in blobs:
                zlib.decompress(b)

        def ours_threads(threads: int):
            def run() -> int:
                frame = WaymoFrame(parse_frame(data, "bench"), where="bench", threads=threads)
                return len(frame.points())

            return run

        n_points = ours_threads(1)()  # warm the per-calibration ray cache
        ours_threads(args.threads)()
        t_floor, t_ours, t_ours1 = _median_times(
            [floor, ours_threads(args.threads), ours_threads(1)], args.repeats
        )

        # Streaming memory: peak Python-tracked allocation while reading many frames stays ~one frame.
        many = Path(tmp) / "many.tfrecord"
        with WaymoWriter(many, level=1) as writer:
            for i in range(args.stream_frames):
                writer.write(
                    record.__class__(
                        **{
                            **record.__dict__,
                            "key": type(record.key)(record.key.segment, record.key.timestamp_us + i),
                        }
                    ),
                    range_images,
                )
        tracemalloc.start()
        for frame in WaymoV1Reader(many, threads=args.threads):
            frame.points()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    print(
        f"frame: {len(blobs)} compressed matrices, {compressed / 1e6:.1f} MB -> {inflated / 1e6:.1f} MB, "
        f"{n_points:,} points"
    )
    print(f"floor  (zlib inflate, 1 core, sequential) : {t_floor * 1e3:8.1f} ms median")
    print(
        f"drivetl decode, {args.threads} threads              : {t_ours * 1e3:8.1f} ms median  "
        f"({1 / t_ours:.1f} frames/s, {n_points / t_ours / 1e6:.1f} M points/s)"
    )
    print(
        f"drivetl decode, 1 thread                : {t_ours1 * 1e3:8.1f} ms median  "
        f"({1 / t_ours1:.1f} frames/s, {n_points / t_ours1 / 1e6:.1f} M points/s)"
    )
    print(
        f"ratio drivetl/floor: {t_ours / t_floor:.2f}x ({args.threads} threads), "
        f"{t_ours1 / t_floor:.2f}x (1 thread); target <= 1.5x"
    )
    print(
        f"streaming {args.stream_frames} frames: peak traced memory {peak / 1e6:.0f} MB "
        f"(one frame inflated: {inflated / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
