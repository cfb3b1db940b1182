"""`drivetl rig beams SCAN... [--write RIG]`: estimate a LiDAR's beam count and inclinations."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Estimate the number of beams and their inclinations from one or more scans in the LiDAR's own "
    "frame (.pcd, .ply, .bin, .npy, .npz), print them in degrees, and optionally write them into a rig file."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl rig beams`."""
    parser.add_argument("scans", nargs="+", metavar="SCAN", help="point files in the sensor frame")
    parser.add_argument("--write", metavar="RIG", help="rig.yaml whose LiDAR gets the estimated beams")
    parser.add_argument("--lidar", help="which LiDAR of the rig to update (default: the only one)")
    parser.add_argument(
        "--min-separation-deg",
        type=float,
        default=0.3,
        help="closest two beams may be, degrees (default 0.3)",
    )
    parser.add_argument(
        "--bin-columns",
        default="x,y,z,intensity",
        help="column layout of .bin/.npy scans (default x,y,z,intensity)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `drivetl rig beams`; returns the exit code."""
    from drivetl.calib.beams import estimate_beams
    from drivetl.data.formats.pointfile import read_points

    columns = tuple(c.strip() for c in args.bin_columns.split(","))
    scans = [read_points(path, columns=columns)[0] for path in args.scans]
    pattern = estimate_beams(scans, min_separation_deg=args.min_separation_deg)
    degs = pattern.inclinations_deg
    print(f"beams: {pattern.count}")
    print("inclinations_deg (ascending): [" + ", ".join(f"{d:.3f}" for d in degs) + "]")
    print("points per beam: [" + ", ".join(str(int(c)) for c in pattern.counts) + "]")
    if args.write:
        name = write_beams(Path(args.write), [float(d) for d in degs], args.lidar)
        print(f"wrote {pattern.count} beams into {args.write} (lidar {name})")
    return 0


def write_beams(rig_path: Path, inclinations_deg: list[float], lidar: str | None) -> str:
    """Set `beams.inclinations_deg` of one LiDAR in a rig file (atomically, validated before writing)."""
    import yaml

    from drivetl._io import atomic_write_text, read_yaml
    from drivetl.calib import rig_from_dict
    from drivetl.errors import RigError

    try:
        text = rig_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RigError(f"{rig_path}: cannot read the rig file ({exc})") from None
    doc = read_yaml(text, str(rig_path), RigError)
    lidars = (doc or {}).get("lidars") if isinstance(doc, dict) else None
    if not isinstance(lidars, list) or not lidars:
        raise RigError(f"{rig_path}: lidars: the rig lists no LiDAR to write beams into")
    names = [str(ld.get("name")) for ld in lidars if isinstance(ld, dict)]
    if lidar is None:
        if len(names) != 1:
            raise RigError(f"{rig_path}: the rig has LiDARs {names}; choose one with --lidar")
        lidar = names[0]
    if lidar not in names:
        raise RigError(f"{rig_path}: no LiDAR named {lidar!r} (has {names})")
    entry = lidars[names.index(lidar)]
    entry["beams"] = {"inclinations_deg": [round(d, 4) for d in inclinations_deg]}
    offsets = entry.get("azimuth_offsets_deg")
    if offsets is not None and len(offsets) != len(inclinations_deg):
        del entry["azimuth_offsets_deg"]
    rig_from_dict(doc, str(rig_path))  # raises RigError before anything is written
    atomic_write_text(rig_path, yaml.safe_dump(doc, sort_keys=False))
    return lidar
