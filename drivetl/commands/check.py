"""`drivetl check DATA [--against SOURCE] --out REPORT_DIR`: a data report with figures and warnings."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Check a team-format folder (or Waymo TFRecords, or a Waymo v2 folder) before training: writes "
    "REPORT_DIR/report.md with LiDAR-on-camera overlays, a bird's-eye view, histograms against a source "
    "dataset, points per box and box sizes, and lists warnings with their fixes. Exit code 1 when a warning "
    "is an error."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl check`."""
    parser.add_argument(
        "data",
        metavar="DATA",
        help="team-format folder (with rig.yaml), Waymo .tfrecord(s) or a Waymo v2 folder",
    )
    parser.add_argument(
        "--against", metavar="SOURCE", help="source dataset to compare with (same kinds as DATA)"
    )
    parser.add_argument("--out", metavar="REPORT_DIR", required=True, help="folder for report.md and figures")
    parser.add_argument("--no-figures", action="store_true", help="write the Markdown report only (faster)")
    parser.add_argument(
        "--max-frames", type=int, default=20, help="frames sampled from each dataset (default 20)"
    )


def run(args: argparse.Namespace) -> int:
    """Run `drivetl check`; returns the exit code."""
    from drivetl.data.check import run_check

    result = run_check(
        args.data, args.out, against=args.against, max_frames=args.max_frames, figures=not args.no_figures
    )
    for issue in result.issues:
        print(issue)
    errors = sum(i.severity == "error" for i in result.issues)
    print(f"report: {result.report} ({errors} errors, {len(result.issues) - errors} warnings)")
    return 1 if result.has_errors else 0
