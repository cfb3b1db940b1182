"""`drivetl convert waymo SRC... OUT`: Waymo v1 TFRecords or v2 folders -> the training cache (parallel,
resumable)."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Convert Waymo Open Dataset v1 TFRecords (files or folders) or v2 dataset folders (Parquet components) "
    "into the training cache OUT: one shard per v1 file or v2 segment, several in parallel (--workers). A "
    "rerun skips finished shards; an interrupted run leaves no half-written shard. Prints a summary at the "
    "end; exit code 2 when a source could not be converted."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl convert`."""
    parser.add_argument(
        "kind",
        choices=["waymo"],
        help="source format (waymo: Waymo Open Dataset v1 TFRecords or v2 folders, told apart by content)",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="source files or folders, then the output folder OUT"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="files converted in parallel (processes; default 1)"
    )
    parser.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="skip damaged records (bad CRC, not a Frame) and count them instead of failing the file",
    )
    parser.add_argument(
        "--drop-no-label-zone", action="store_true", help="leave out points in no-label zones"
    )


def run(args: argparse.Namespace) -> int:
    """Run `drivetl convert`; returns the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from drivetl.data.formats.waymo._convert import convert_waymo, find_sources
    from drivetl.errors import DataError

    if len(args.paths) < 2:
        raise DataError(
            "convert: give at least one source and the output folder (drivetl convert waymo SRC... OUT)"
        )
    *sources, out = args.paths
    total = len(find_sources(sources))
    console = Console(stderr=True)
    frames = 0
    with Progress(
        TextColumn("[bold]convert[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("files", total=total, info="")

        def on_file_done(res) -> None:
            nonlocal frames
            frames += res.frames
            state = "failed" if res.error else ("done before" if res.resumed else f"{res.frames} frames")
            progress.update(task, advance=1, info=f"{frames} frames | {res.shard}: {state}")

        summary = convert_waymo(
            sources,
            out,
            workers=args.workers,
            skip_corrupt=args.skip_corrupt,
            drop_no_label_zone=args.drop_no_label_zone,
            on_file_done=on_file_done,
        )
    new = [f for f in summary.files if not f.resumed and not f.error]
    resumed = [f for f in summary.files if f.resumed]
    points = sum(f.points for f in new)
    work = sum(f.seconds for f in new)
    skipped = sum(f.skipped_records for f in summary.files)
    print(
        f"cache: {summary.out} ({summary.frames} frames in {len(summary.files) - len(summary.failed)} shards)"
    )
    print(
        f"converted {len(new)} files ({sum(f.frames for f in new)} frames, {points:,} points), "
        f"{len(resumed)} already done, {len(summary.failed)} failed, {skipped} damaged records skipped"
    )
    if new and work > 0:
        print(
            f"time: {summary.seconds:.1f} s wall, {sum(f.frames for f in new) / summary.seconds:.1f} frames/s"
        )
    for f in summary.failed:
        print(f"failed: {f.error}")
    if summary.failed:
        first = summary.failed[0]
        raise DataError(
            f"{len(summary.failed)} of {len(summary.files)} files failed (first: {first.error}); "
            "fix or remove them, or pass --skip-corrupt, then rerun to resume"
        )
    return 0
