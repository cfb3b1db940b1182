"""Compare drivetl's Waymo points with the official converter's, frame by frame (a one-off check).

Not part of the test suite: it needs TensorFlow and the official Waymo wheel, which drivetl never
depends on. Run it in a throwaway environment, for example::

    python -m venv /tmp/wod && . /tmp/wod/bin/activate
    pip install tensorflow-cpu==2.13.* protobuf==3.20.3 "numpy<2"
    pip install --no-deps waymo-open-dataset-tf-2-12-0
    pip install -e . --no-deps && pip install crc32c pillow rich pyyaml
    python tools/compare_waymo_official.py [FILE.tfrecord ...] [--frames 3]

(With protobuf 4.x the official `parse_range_image_and_camera_projection` rejects the `bytearray` it
builds; protobuf 3.20.3 works, slowly.) Without files it writes a full-size synthetic frame with
drivetl's writer and compares on that. For every frame, laser and return it checks the point count
and order and the worst |difference|, and prints both timings. The official converter does its
per-pixel-pose step in float32 on world coordinates; with Waymo's poses (thousands of metres from the
origin) that alone moves TOP points by several millimetres, so where the difference exceeds 1 mm the
script also compares both with the exact float64 result (drivetl.calib's reference implementation).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from drivetl.data.formats._tfrecord import TFRecordReader
from drivetl.data.formats.waymo import LASER_NAMES, WaymoFrame, WaymoWriter, parse_frame, pixel_pose_matrices
from drivetl.data.formats.waymo._synthetic import synthetic_frame

TOLERANCE_M = 1e-3


def official_points(data: bytes) -> tuple[list[np.ndarray], float]:
    """[(N1, 3) return 1, (N2, 3) return 2] from the official frame_utils, and the seconds it took."""
    from waymo_open_dataset import dataset_pb2
    from waymo_open_dataset.utils import frame_utils

    t0 = time.perf_counter()
    frame = dataset_pb2.Frame()
    frame.ParseFromString(data)
    range_images, camera_projections, _, top_pose = frame_utils.parse_range_image_and_camera_projection(frame)
    out = []
    for ri_index in (0, 1):
        points, _ = frame_utils.convert_range_image_to_point_cloud(
            frame, range_images, camera_projections, top_pose, ri_index=ri_index
        )
        out.append(np.concatenate(points, axis=0))
    return out, time.perf_counter() - t0


def ours(data: bytes) -> tuple[WaymoFrame, float]:
    t0 = time.perf_counter()
    frame = WaymoFrame(parse_frame(data, "compare"), where="compare", threads=4)
    frame.points()
    return frame, time.perf_counter() - t0


def exact_points(frame: WaymoFrame, laser: str, return_index: int) -> np.ndarray:
    """The same points in float64 throughout, by drivetl.calib's plain reference implementation."""
    import zlib

    from drivetl.data.formats.waymo._matrix import parse_matrix

    proto = next(la for la in frame.proto.lasers if LASER_NAMES[la.name - 1] == laser)
    ri = proto.ri_return1 if return_index == 1 else proto.ri_return2
    ranges = parse_matrix(zlib.decompress(ri.range_image_compressed), "<f4")[..., 0]
    pose = None
    if proto.ri_return1.range_image_pose_compressed:
        pose = pixel_pose_matrices(
            parse_matrix(zlib.decompress(proto.ri_return1.range_image_pose_compressed), "<f4")
        )
    points, _ = frame.rig.lidar(laser).range_image_to_points(ranges, pose, frame.world_from_vehicle)
    return points


def compare_file(path: Path, max_frames: int) -> bool:
    """Per frame, return and laser: same count, and within 1 mm of the official points, or, where the
    official float32 arithmetic on world coordinates (thousands of metres: a 4 mm float32 grid) is
    the cause, drivetl within 0.1 mm of the exact float64 result."""
    ok = True
    for i, data in enumerate(TFRecordReader(path)):
        if i >= max_frames:
            break
        theirs, t_theirs = official_points(data)
        frame, t_mine = ours(data)
        for ret in (1, 2):
            start = 0
            for laser in frame.lasers:
                mine = frame.points(laser, ret)
                a = theirs[ret - 1][start : start + len(mine)]
                start += len(mine)
                if a.shape != mine.shape:
                    print(
                        f"{path.name} frame {i} {laser} return {ret}: "
                        f"official {a.shape} vs drivetl {mine.shape}"
                    )
                    ok = False
                    continue
                diff = float(np.abs(a - mine).max()) if len(a) else 0.0
                line = f"{path.name} frame {i} {laser} return {ret}: {len(a):,} points, |official - drivetl| "
                line += f"{diff * 1e3:.4f} mm"
                good = diff <= TOLERANCE_M
                if not good:
                    exact = exact_points(frame, laser, ret)
                    ours_err = float(np.abs(mine - exact).max())
                    theirs_err = float(np.abs(a - exact).max())
                    line += f"; vs exact float64: drivetl {ours_err * 1e3:.4f} mm, "
                    line += f"official {theirs_err * 1e3:.4f} mm"
                    good = ours_err <= 1e-4 and theirs_err >= diff - 1e-4
                    line += " (official float32 rounding)" if good else ""
                print(line + ("  ok" if good else "  MISMATCH"))
                ok &= good
            if start != len(theirs[ret - 1]):
                print(
                    f"{path.name} frame {i} return {ret}: "
                    f"official has {len(theirs[ret - 1])} points, drivetl {start}"
                )
                ok = False
        print(f"  official {t_theirs * 1e3:.0f} ms, drivetl {t_mine * 1e3:.0f} ms ({t_theirs / t_mine:.1f}x)")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--frames", type=int, default=3, help="frames compared per file")
    args = ap.parse_args()
    files = list(args.files)
    with tempfile.TemporaryDirectory() as tmp:
        if not files:
            record, range_images = synthetic_frame(seed=0)
            path = Path(tmp) / "synthetic.tfrecord"
            with WaymoWriter(path) as w:
                w.write(record, range_images)
            record, range_images = synthetic_frame(seed=1, per_pixel_jitter=True)
            with WaymoWriter(Path(tmp) / "synthetic_jitter.tfrecord") as w:
                w.write(record, range_images)
            files = [path, Path(tmp) / "synthetic_jitter.tfrecord"]
        ok = all([compare_file(f, args.frames) for f in files])
    verdict = "same count and order; within 1 mm, or nearer the exact result than the official float32 path"
    print(verdict if ok else "DIFFERENCES FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
