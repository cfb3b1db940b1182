"""`drivetl rig from-vendor FILE --out rig.yaml`: a LiDAR's beams from the vendor's calibration file."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Read a LiDAR beam table from the vendor's calibration file (Hesai channel .csv, Velodyne driver "
    ".yaml or db.xml, Ouster metadata .json) and write a rig with that LiDAR, or (--into) put the beams "
    "into an existing rig's LiDAR, keeping its mounting. Validated before anything is written."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl rig from-vendor`."""
    parser.add_argument("file", metavar="FILE", help="vendor calibration file")
    parser.add_argument("--out", required=True, help="rig.yaml to write")
    parser.add_argument("--into", metavar="RIG", help="start from this rig and replace one LiDAR's beams")
    parser.add_argument("--lidar", default="TOP", help="LiDAR name (default TOP)")
    parser.add_argument("--columns", type=int, help="columns per revolution (default: the file's, else 1800)")
    parser.add_argument("--max-range", type=float, default=120.0, help="metres (default 120)")


def run(args: argparse.Namespace) -> int:
    """Run `drivetl rig from-vendor`; returns the exit code."""
    import dataclasses

    import numpy as np

    from drivetl.calib import IntensityEncoding, LidarModel, SensorRig, load_rig, save_rig
    from drivetl.calib.vendor import read_vendor_table

    table = read_vendor_table(args.file)
    columns = args.columns or table.columns or 1800
    beams = {
        "inclinations": np.radians(table.inclinations_deg),
        "azimuth_offsets": np.radians(table.azimuth_offsets_deg),
        "columns": columns,
    }
    if args.into:
        rig = load_rig(args.into)
        old = rig.lidar(args.lidar)
        if not (args.columns or table.columns):
            beams["columns"] = columns = old.columns
        lidars = tuple(dataclasses.replace(ld, **beams) if ld.name == args.lidar else ld for ld in rig.lidars)
        rig = dataclasses.replace(rig, lidars=lidars, source_path=args.out)
        mount = f"kept the mounting of {args.into}'s {old.name}"
    else:
        enc = (
            IntensityEncoding("uint16", 65535.0)
            if table.vendor == "ouster"
            else IntensityEncoding("uint8", 255.0)
        )
        lidar = LidarModel(
            name=args.lidar,
            model=table.model,
            vehicle_from_lidar=np.eye(4),
            max_range=args.max_range,
            intensity=enc,
            **beams,
        )
        rig = SensorRig(name=args.lidar.lower(), lidars=(lidar,), source_path=args.out)
        mount = "vehicle_from_sensor is the identity: set the LiDAR's mounting (or use --into)"
    save_rig(rig, args.out)
    print(f"{table.model}: {table.inclinations_deg.size} beams, {columns} columns")
    print("inclinations_deg: [" + ", ".join(f"{d:.3f}" for d in table.inclinations_deg) + "]")
    if table.lidar_to_sensor is not None:
        t = np.round(table.lidar_to_sensor[:3, 3], 5).tolist()
        print(f"lidar_to_sensor (vendor, not applied): translation {t} m")
    print(f"wrote {args.out}; {mount}")
    return 0
