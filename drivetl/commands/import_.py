"""`drivetl import {kitti,dgp} SRC OUT`: convert another layout into the team format."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Import a dataset into the team format: `kitti` (object layout: velodyne, calib, image_2, label_2; "
    "vehicle frame = Velodyne frame) or `dgp` (a TRI DGP scene folder). Resumable: frames already in OUT "
    "are skipped."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl import`."""
    parser.add_argument("layout", choices=("kitti", "dgp"), help="source layout")
    parser.add_argument("src", metavar="SRC", help="source folder")
    parser.add_argument("out", metavar="OUT", help="team-format folder to write")
    parser.add_argument("--split", default="train", help="split the imported frames go to (default train)")


def run(args: argparse.Namespace) -> int:
    """Run `drivetl import`; returns the exit code."""
    match args.layout:
        case "kitti":
            from drivetl.data.formats.kitti import import_kitti

            summary = import_kitti(args.src, args.out, split=args.split)
        case "dgp":
            from drivetl.data.formats.dgp import import_dgp

            summary = import_dgp(args.src, args.out, split=args.split)
        case _:
            raise AssertionError(args.layout)
    skipped = ", ".join(f"{k} x{v}" for k, v in sorted(summary["skipped_classes"].items())) or "none"
    print(
        f"imported {summary['frames']} frames ({summary['skipped_frames']} already present) with "
        f"{summary['boxes']} boxes into {args.out}; skipped classes: {skipped}"
    )
    return 0
