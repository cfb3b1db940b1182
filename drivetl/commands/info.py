"""`drivetl info PATH`: what a Waymo v1 file or v2 folder holds (frames, lasers, cameras, labels, points)."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Print what a Waymo Open Dataset v1 TFRecord or v2 dataset folder (Parquet components) holds: frames, "
    "segments, lasers and range image sizes, cameras and image sizes, labels per class and points per laser "
    "and return. CRCs are always verified; the first damaged record or frame stops it (exit code 2). With "
    "--check, damaged records and frames are counted instead (exit code 1 when there are any)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl info`."""
    parser.add_argument(
        "file", metavar="PATH", help="a Waymo v1 .tfrecord file or a Waymo v2 dataset folder"
    )
    parser.add_argument(
        "--check", action="store_true", help="go on past damaged records and frames, counting them"
    )
    parser.add_argument("--no-points", action="store_true", help="do not decode range images (faster)")


def run(args: argparse.Namespace) -> int:
    """Run `drivetl info`; returns the exit code."""
    from collections import Counter
    from pathlib import Path

    from drivetl.data.formats.waymo import LASER_NAMES, WaymoV1Reader, WaymoV2Reader, is_v2_folder
    from drivetl.errors import DataError

    path = Path(args.file)
    v2 = is_v2_folder(path)
    if v2:
        reader = WaymoV2Reader(path)
        size = sum(f.stat().st_size for f in path.rglob("*.parquet"))
    else:
        reader = WaymoV1Reader(path, skip_corrupt=args.check)
        size = path.stat().st_size
    frames = 0
    segments: Counter[str] = Counter()
    times: list[int] = []
    labels: Counter[str] = Counter()
    points: Counter[tuple[str, int]] = Counter()
    shapes: dict[str, tuple[int, int]] = {}
    cameras: dict[str, tuple[int, int]] = {}
    bad_frames: list[str] = []
    for frame in reader:
        try:
            frame_labels = frame.boxes.classes
            frame_cameras = {name: img.size() for name, img in frame.images.items()}
            frame_points: Counter[tuple[str, int]] = Counter()
            if not args.no_points:
                for name in frame.lasers:
                    shapes.setdefault(name, frame.range_image_shape(name))
                    for ret in (1, 2):
                        frame_points[(name, ret)] += len(frame.points(name, ret))
        except DataError as exc:
            if not args.check:
                raise
            bad_frames.append(str(exc))
            continue
        frames += 1
        segments[frame.key.segment] += 1
        times.append(frame.key.timestamp_us)
        labels.update(frame_labels)
        for name, wh in frame_cameras.items():
            cameras.setdefault(name, wh)
        points.update(frame_points)
    print(f"{'folder' if v2 else 'file'}: {path} ({size / 1e6:.1f} MB)")
    print(f"frames: {frames} in {len(segments)} segment(s)")
    for seg, n in segments.most_common():
        print(f"  {seg}: {n} frames")
    if times:
        print(f"time: {min(times)} .. {max(times)} us ({(max(times) - min(times)) / 1e6:.2f} s)")
    if not args.no_points:
        for name in LASER_NAMES:
            if name in shapes:
                h, w = shapes[name]
                r1, r2 = points[(name, 1)], points[(name, 2)]
                print(f"laser {name}: range image {h}x{w}; points return 1: {r1:,}, return 2: {r2:,}")
        total = sum(points.values())
        print(f"points: {total:,} ({total / max(frames, 1):,.0f} per frame)")
    for name, (w, h) in cameras.items():
        print(f"camera {name}: {w}x{h}")
    print("labels: " + (", ".join(f"{c} {n}" for c, n in labels.most_common()) or "none"))
    if args.check:
        damaged = reader.skipped + len(bad_frames)
        what = "frame(s)" if v2 else "record(s)"
        print(f"check: {damaged} damaged {what}" + ("" if damaged or v2 else "; all CRCs verified"))
        for msg in bad_frames:
            print(f"  {msg}")
        return 1 if damaged else 0
    return 0
