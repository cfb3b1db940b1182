"""`drivetl import {kitti,dgp,bag,av2} SRC OUT`: convert another layout or a log into the team format."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Import a dataset into the team format: `kitti` (object layout: velodyne, calib, image_2, label_2; "
    "vehicle frame = Velodyne frame), `dgp` (a TRI DGP scene folder), `bag` (a ROS 1 .bag, a ROS 2 bag "
    "folder with sqlite3 or MCAP storage, or a .mcap file: one LiDAR topic and its cameras, the rig from "
    "tf and CameraInfo) or `av2` (an Argoverse 2 sensor log folder). Resumable: frames already in OUT "
    "are skipped."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl import`."""
    parser.add_argument("layout", choices=("kitti", "dgp", "bag", "av2"), help="source layout")
    parser.add_argument("src", metavar="SRC", help="source folder, or the log (bag)")
    parser.add_argument("out", metavar="OUT", help="team-format folder to write")
    parser.add_argument("--split", default="train", help="split the imported frames go to (default train)")
    bag = parser.add_argument_group("bag")
    bag.add_argument("--lidar-topic", metavar="TOPIC[=NAME]", help="PointCloud2 topic (required for bag)")
    bag.add_argument(
        "--camera-topic",
        action="append",
        default=[],
        metavar="TOPIC[=NAME]",
        help="Image or CompressedImage topic (repeatable); its CameraInfo is found beside it",
    )
    bag.add_argument(
        "--vehicle-frame", default="base_link", help="tf frame of the vehicle (default base_link)"
    )
    bag.add_argument("--rig", help="use this rig.yaml instead of reading the rig from the log")
    bag.add_argument("--segment", help="segment name (default: the log's name)")
    bag.add_argument(
        "--tolerance", type=float, default=0.05, help="camera-LiDAR pairing tolerance, seconds (default 0.05)"
    )
    bag.add_argument("--odom-topic", help="nav_msgs/Odometry topic giving world_from_vehicle (default: /tf)")
    bag.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="COLUMN=FIELD",
        help="read a drivetl column from another PointCloud2 field, e.g. intensity=amplitude",
    )
    av2 = parser.add_argument_group("av2")
    av2.add_argument(
        "--calibration", help="folder with egovehicle_SE3_sensor.feather (default: SRC/calibration)"
    )


def run(args: argparse.Namespace) -> int:
    """Run `drivetl import`; returns the exit code."""
    match args.layout:
        case "kitti":
            from drivetl.data.formats.kitti import import_kitti

            summary = import_kitti(args.src, args.out, split=args.split)
        case "dgp":
            from drivetl.data.formats.dgp import import_dgp

            summary = import_dgp(args.src, args.out, split=args.split)
        case "bag":
            return _run_bag(args)
        case "av2":
            from drivetl.data.formats.av2 import import_av2

            summary = import_av2(args.src, args.out, split=args.split, calibration=args.calibration)
        case _:
            raise AssertionError(args.layout)
    skipped = ", ".join(f"{k} x{v}" for k, v in sorted(summary["skipped_classes"].items())) or "none"
    print(
        f"imported {summary['frames']} frames ({summary['skipped_frames']} already present) with "
        f"{summary['boxes']} boxes into {args.out}; skipped classes: {skipped}"
    )
    for line in summary.get("lines", ()):
        print(line)
    return 0


def selection_from_args(args: argparse.Namespace):
    """The LogSelection of `--lidar-topic`, `--camera-topic`, `--vehicle-frame`, `--field`, `--odom-topic`."""
    from drivetl.data.formats.bag import LogSelection, parse_topic
    from drivetl.errors import ConfigError

    if not args.lidar_topic:
        raise ConfigError("drivetl import bag: --lidar-topic is required (a sensor_msgs/PointCloud2 topic)")
    fields = {}
    for spec in args.field:
        col, sep, src = spec.partition("=")
        if not sep or not col or not src:
            raise ConfigError(f"--field {spec!r}: write COLUMN=FIELD, e.g. intensity=amplitude")
        fields[col.strip()] = src.strip()
    return LogSelection(
        lidar=parse_topic(args.lidar_topic),
        cameras=tuple(parse_topic(t) for t in args.camera_topic),
        vehicle_frame=args.vehicle_frame,
        odometry=args.odom_topic,
        field_map=fields,
    )


def _run_bag(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from drivetl.calib import load_rig
    from drivetl.data.formats.bag import import_bag

    sel = selection_from_args(args)
    rig = load_rig(args.rig) if args.rig else None
    columns = (
        TextColumn("import {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(sel.lidar.topic, total=None)
        summary = import_bag(
            args.src,
            args.out,
            sel,
            rig=rig,
            segment=args.segment,
            split=args.split,
            tolerance_s=args.tolerance,
            progress=lambda done, total: bar.update(task, completed=done, total=total or None),
        )
    print(
        f"imported {summary['frames']} frames ({summary['skipped_frames']} already present) into {args.out}; "
        f"camera images not paired within {args.tolerance} s: {summary['dropped_images']}; frames missing a "
        f"camera: {summary['unpaired_frames']}; invalid points dropped: {summary['dropped_points']}"
    )
    for note in summary["notes"]:
        print(f"note: {note}")
    rig = summary["rig"]
    lidar = rig.lidars[0]
    print(
        f"rig: LiDAR {lidar.name}: {lidar.rows} beams, {lidar.columns} columns; cameras: {rig.camera_names}"
    )
    return 0
