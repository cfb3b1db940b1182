"""`drivetl evaluate`: one or more checkpoints + fleet data -> metrics.json and a report with plots."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Run one or more detectors on your own data (a team folder, canonicalized with its rig.yaml, or "
    "Waymo TFRecords) and compare them: AP/APH per class, range band and difficulty level, written to "
    "REPORT_DIR/metrics.json and REPORT_DIR/report.md with PR curves, per-range bars and bird's-eye "
    "views. Each --ckpt is a `drivetl pretrain`/`drivetl finetune` checkpoint or an adapter file "
    "(ADAPTER.safetensors, or ADAPTER.safetensors@BASE.ckpt to name its pretrained base)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl evaluate`."""
    parser.add_argument(
        "--ckpt",
        action="append",
        default=[],
        metavar="CKPT",
        help="checkpoint or adapter file (ADAPTER@BASE); repeat for a comparison",
    )
    parser.add_argument(
        "--predictions",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a `drivetl predict --out` folder, scored like a model (after the --ckpt models)",
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="team folder (with rig.yaml) or Waymo TFRecords"
    )
    parser.add_argument("--out", required=True, type=Path, help="report folder (created)")
    parser.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="display name per --ckpt, in the same order (default: file names)",
    )
    parser.add_argument("--split", help="evaluate this split of a team folder (splits/SPLIT.txt), e.g. test")
    parser.add_argument(
        "--format",
        default="auto",
        choices=("auto", "team", "waymo", "waymo-v2", "cache"),
        help="data format (default: decided from the folder)",
    )
    parser.add_argument("--max-frames", type=int, help="evaluate only the first N frames")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per forward pass (default 4)")
    parser.add_argument("--workers", type=int, default=0, help="data loading worker processes (default 0)")
    parser.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="leave out frames that cannot be read, counted and named in the report (default: stop "
        "with one line naming the frame); the first frame must read either way",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--fusion-health",
        action="store_true",
        help="rerun camera models with their cameras hidden and report the difference",
    )
    parser.add_argument(
        "--region",
        choices=("model", "all"),
        default="model",
        help="evaluate boxes inside the models' detection range (default) or all boxes",
    )
    parser.add_argument("--range-edges", help="range band edges in metres, e.g. 0,30,50 (default)")
    parser.add_argument(
        "--matcher",
        choices=("iou", "distance"),
        default="iou",
        help="rotated-box IoU (Waymo thresholds, default) or BEV centre distance",
    )
    parser.add_argument("--iou-type", choices=("3d", "bev"), default="3d", help="IoU in 3D (default) or BEV")
    parser.add_argument(
        "--class-map",
        action="append",
        default=[],
        metavar="NAME=CLASS",
        help="map a head class onto a canonical class (vehicle, pedestrian, cyclist, sign)",
    )
    parser.add_argument(
        "--render-frames", type=int, default=3, help="frames drawn in bird's-eye view (default 3)"
    )
    parser.add_argument("--score-threshold", type=float, default=0.05, help="decoding score threshold (0.05)")
    from drivetl.commands._tta import add_tta_argument

    add_tta_argument(parser, "none", "every --ckpt model, LiDAR-only with a grid symmetric about the vehicle")


def run(args: argparse.Namespace) -> int:
    """Run `drivetl evaluate`; returns the exit code."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from drivetl.errors import ConfigError
    from drivetl.workflows.evaluate import evaluate, parse_range_edges

    class_map = {}
    for item in args.class_map:
        name, sep, cls = item.partition("=")
        if not sep or not name or not cls:
            raise ConfigError(f"--class-map {item!r}: write NAME=CLASS, e.g. car=vehicle")
        class_map[name] = cls
    if not args.ckpt and not args.predictions:
        raise ConfigError("evaluate: give at least one --ckpt or --predictions")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: use at least 1")
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    console = Console(stderr=True)
    columns = (
        TextColumn("evaluate {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        from drivetl.workflows.evaluate import PredictionFiles

        models = list(args.ckpt) + [PredictionFiles.open(p) for p in args.predictions]
        report = evaluate(
            models,
            args.data,
            args.out,
            names=args.name,
            split=args.split,
            data_format=args.format,
            max_frames=args.max_frames,
            batch_size=args.batch_size,
            device=device,
            workers=args.workers,
            fusion_health=args.fusion_health,
            region=args.region,
            range_edges=parse_range_edges(args.range_edges),
            matcher=args.matcher,
            iou_type=args.iou_type,
            score_threshold=args.score_threshold,
            render_frames=args.render_frames,
            class_map=class_map,
            skip_corrupt=args.skip_corrupt,
            tta=args.tta,
            log=lambda msg: console.print(msg, markup=False, highlight=False),
            progress=progress,
        )
    print(report.table())
    skipped = report.skipped
    if skipped:
        print(f"{len(skipped)} frames skipped as unreadable (listed in metrics.json and the report)")
    for h in report.fusion:
        print(
            f"fusion health {h.name}: mAP with cameras {h.map_with:.3f}, without {h.map_without:.3f} "
            f"(delta {h.delta:+.3f}), heatmap change {h.heat_change:.2%}, camera coverage {h.coverage:.1%}"
        )
    print(f"report: {report.paths['report']}")
    print(f"metrics: {report.paths['metrics']}")
    print(f"html: {report.paths['html']}")
    return 0
