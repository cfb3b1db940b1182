"""`drivetl rig`: rig-file tools (`show`, `beams`, `from-bag`, `from-vendor`)."""

from __future__ import annotations

import argparse
import importlib

DESCRIPTION = "Validate and summarize rig files, or estimate a LiDAR's beam pattern from scans."

# (name, module, one-line help)
_SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    ("show", "drivetl.commands._rig_show", "validate a rig file and print a readable summary"),
    ("beams", "drivetl.commands._rig_beams", "estimate beam count and inclinations from scans"),
    ("from-bag", "drivetl.commands._rig_from_bag", "a rig from a log's tf, CameraInfo and LiDAR sweeps"),
    ("from-vendor", "drivetl.commands._rig_from_vendor", "a LiDAR's beams from a vendor calibration file"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl rig`."""
    sub = parser.add_subparsers(dest="rig_command", metavar="RIG_COMMAND", required=True)
    for name, module_name, help_text in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        cmd = sub.add_parser(name, help=help_text, description=getattr(module, "DESCRIPTION", help_text))
        module.add_arguments(cmd)
        cmd.set_defaults(_rig_run=module.run)


def run(args: argparse.Namespace) -> int:
    """Run `drivetl rig`; returns the exit code."""
    return int(args._rig_run(args) or 0)
