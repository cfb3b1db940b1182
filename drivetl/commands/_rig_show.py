"""`drivetl rig show RIG.yaml`: validate a rig file and print a readable summary."""

from __future__ import annotations

import argparse
import math

DESCRIPTION = (
    "Validate a rig file and print its sensors: mounting (translation and roll/pitch/yaw), LiDAR beams, "
    "azimuth sampling, ranges and intensity encoding, camera intrinsics, distortion and fields of view."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl rig show`."""
    parser.add_argument("rig", metavar="RIG.yaml", help="the rig file to validate and summarize")


def _mount(m) -> tuple[str, str]:  # noqa: ANN001 - a (4, 4) array
    from drivetl.calib import rpy_from_rotation

    t = m[:3, 3]
    rpy = [math.degrees(a) for a in rpy_from_rotation(m[:3, :3])]
    return " ".join(f"{x:.2f}" for x in t), " ".join(f"{x:.1f}" for x in rpy)


def run(args: argparse.Namespace) -> int:
    """Run `drivetl rig show`; returns the exit code."""
    from rich.console import Console
    from rich.table import Table

    from drivetl.calib import load_rig

    rig = load_rig(args.rig)
    console = Console(width=None if Console().is_terminal else 170)
    ground = rig.ground if rig.ground == "estimate" else f"{rig.ground:.3f} m"
    console.print(
        f"[bold]rig {rig.name}[/bold]  ({args.rig})  valid: {len(rig.lidars)} lidar(s), "
        f"{len(rig.cameras)} camera(s); ground z = {ground}"
    )
    if rig.lidars:
        table = Table(title="LiDARs (vehicle frame: x fwd, y left, z up)", title_justify="left")
        for col in (
            "name",
            "model",
            "x y z m",
            "roll pitch yaw°",
            "beams",
            "inclination°",
            "columns (res.)",
            "range m",
            "intensity",
            "returns",
        ):
            table.add_column(col, no_wrap=col != "model")
        for lidar in rig.lidars:
            xyz, rpy = _mount(lidar.vehicle_from_lidar)
            inc = [math.degrees(x) for x in (lidar.inclinations[0], lidar.inclinations[-1])]
            enc = lidar.intensity
            intensity = f"{enc.kind} max {enc.max_value:g}" + (" tanh" if enc.transform == "tanh" else "")
            offsets = "" if lidar.azimuth_offsets is None else " +offsets"
            table.add_row(
                lidar.name,
                lidar.model,
                xyz,
                rpy,
                f"{lidar.rows}{offsets}",
                f"{inc[0]:.2f} .. {inc[1]:.2f}",
                f"{lidar.columns} ({math.degrees(lidar.azimuth_resolution):.3f}°)",
                f"{lidar.min_range:g} .. {lidar.max_range:g}",
                intensity,
                str(lidar.returns),
            )
        console.print(table)
    if rig.cameras:
        table = Table(title="Cameras (Waymo camera frame: x fwd, y left, z up)", title_justify="left")
        for col in (
            "name",
            "size",
            "fx fy",
            "cx cy",
            "k1 k2 p1 p2 k3",
            "x y z m",
            "roll pitch yaw°",
            "HFOV x VFOV°",
            "shutter",
        ):
            table.add_column(col, no_wrap=True)
        for cam in rig.cameras:
            xyz, rpy = _mount(cam.vehicle_from_camera)
            hfov, vfov = cam.fov_deg()
            shutter = cam.rolling_shutter_direction.lower().replace("_", " ")
            if cam.readout_time_s:
                shutter += f", {cam.readout_time_s * 1000:g} ms"
            table.add_row(
                cam.name,
                f"{cam.width}x{cam.height}",
                f"{cam.fx:.1f} {cam.fy:.1f}",
                f"{cam.cx:.1f} {cam.cy:.1f}",
                " ".join(f"{c:g}" for c in cam.distortion),
                xyz,
                rpy,
                f"{hfov:.1f} x {vfov:.1f}",
                shutter,
            )
        console.print(table)
    return 0
