"""`drivetl simulate`: render procedurally generated driving scenes through a rig into a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Render procedurally generated street scenes through a rig (every LiDAR and camera) and write what "
    "the rig would have recorded: Waymo v1 TFRecords (range images, calibrations, JPEGs, labels), a Waymo "
    "v2 folder (the same as Parquet components, one file per component per segment) or the team format. "
    "Deterministic for a seed; a rerun resumes, skipping complete shards, segments or frames."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl simulate`."""
    parser.add_argument(
        "--rig", required=True, type=Path, help="rig file (rig.yaml), e.g. configs/rigs/waymo_like.yaml"
    )
    parser.add_argument("--frames", required=True, type=int, help="number of frames to simulate")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--format",
        choices=("waymo", "waymo-v2", "team"),
        default="waymo",
        help="output format: waymo (v1 TFRecords), waymo-v2 (Parquet) or team (default waymo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="scene and noise seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--region", default="us", help="object size statistics: us or eu (default us)")
    parser.add_argument(
        "--frames-per-segment",
        type=int,
        default=20,
        help="frames per simulated street (segment), 10 Hz (default 20)",
    )
    parser.add_argument(
        "--shard-frames", type=int, default=10, help="frames per Waymo v1 TFRecord shard (default 10)"
    )
    parser.add_argument(
        "--camera-scale",
        type=float,
        default=1.0,
        help="render cameras at this fraction of the rig's resolution (default 1; the rig "
        "written with the data carries the scaled intrinsics)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `drivetl simulate`; returns the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from drivetl.calib import load_rig
    from drivetl.errors import ConfigError
    from drivetl.sim.dataset import SimulationPlan, simulate_dataset

    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: use at least 1")
    rig = load_rig(args.rig)
    plan = SimulationPlan(
        rig=rig,
        frames=args.frames,
        out=args.out,
        format=args.format,
        seed=args.seed,
        region=args.region,
        frames_per_segment=args.frames_per_segment,
        shard_frames=args.shard_frames,
        camera_scale=args.camera_scale,
    )
    console = Console(stderr=True)
    columns = (
        TextColumn("simulate {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{rig.name} -> {args.format}", total=args.frames)
        summary = simulate_dataset(plan, workers=args.workers, progress=lambda n: progress.advance(task, n))
    for line in summary.lines():
        print(line)
    print(f"output: {args.out}")
    return 0
