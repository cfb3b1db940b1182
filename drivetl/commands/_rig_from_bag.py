"""`drivetl rig from-bag LOG --lidar-topic T [--camera-topic T ...] --out rig.yaml`."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Build a rig file from a recorded log alone: mountings from /tf_static (and /tf), camera intrinsics "
    "from CameraInfo, the LiDAR's beams from its ring field (or estimated from elevations), validated "
    "before it is written."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl rig from-bag`."""
    parser.add_argument("src", metavar="LOG", help=".bag, .mcap, or ROS 2 bag folder")
    parser.add_argument("--out", required=True, help="rig.yaml to write")
    parser.add_argument("--name", help="rig name (default: the log's name)")
    parser.add_argument("--lidar-topic", required=True, metavar="TOPIC[=NAME]", help="PointCloud2 topic")
    parser.add_argument("--camera-topic", action="append", default=[], metavar="TOPIC[=NAME]")
    parser.add_argument(
        "--vehicle-frame", default="base_link", help="tf frame of the vehicle (default base_link)"
    )
    parser.add_argument("--field", action="append", default=[], metavar="COLUMN=FIELD")
    parser.set_defaults(odom_topic=None)


def run(args: argparse.Namespace) -> int:
    """Run `drivetl rig from-bag`; returns the exit code."""
    import numpy as np

    from drivetl.calib import save_rig
    from drivetl.commands.import_ import selection_from_args
    from drivetl.data.formats.bag import rig_from_log

    rig = rig_from_log(args.src, selection_from_args(args), args.name)
    save_rig(rig, args.out)
    lidar = rig.lidars[0]
    t = lidar.vehicle_from_lidar[:3, 3]
    print(f"LiDAR {lidar.name}: {lidar.rows} beams, {lidar.columns} columns, at {np.round(t, 3).tolist()} m")
    print("inclinations_deg: [" + ", ".join(f"{d:.3f}" for d in np.degrees(lidar.inclinations)) + "]")
    for cam in rig.cameras:
        print(f"camera {cam.name}: {cam.width}x{cam.height}, fx {cam.fx:.2f}, fy {cam.fy:.2f}")
    print(f"wrote {args.out}")
    return 0
