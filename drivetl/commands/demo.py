"""`drivetl demo`: simulate, pretrain, adapt, train from scratch, evaluate — on a laptop CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Run the whole chain on simulated data: a Waymo-format source set and a fleet set from a different "
    "rig (fleet_xt32) in another region (smaller vehicles), supervised pretraining on the source, LoRA "
    "adapters fine-tuned on 10% of the fleet labels, the same recipe from scratch, and an evaluation of "
    "scratch, source-only and adapted on held-out fleet streets. About ten minutes on two quiet CPU "
    "cores at --scale 1; stages already done are skipped, so an interrupted demo resumes. --modality "
    "fusion keeps a front camera on both rigs (the fleet's with other intrinsics, distortion and "
    "mounting), also pretrains and adapts a LiDAR + camera detector, and reports LiDAR-only against "
    "fusion with the fusion health; in a folder where the LiDAR-only demo ran, its trained models are "
    "reused."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl demo`."""
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default runs/demo)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="frames and training steps multiplier (default 1: CPU-sized)"
    )
    parser.add_argument("--seed", type=int, default=0, help="simulation and training seed (default 0)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="data-loader worker processes (default 1); the simulation uses as many, "
        "at least two on a machine with two cores or more",
    )
    parser.add_argument(
        "--modality",
        choices=("lidar", "fusion"),
        default="lidar",
        help="lidar (default): LiDAR-only models; fusion: also a LiDAR + camera detector, "
        "compared side by side",
    )
    from drivetl.sim.regions import REGIONS
    from drivetl.workflows._demo_config import FLEET_REGION, SOURCE_REGION

    parser.add_argument(
        "--fleet-region",
        choices=REGIONS,
        default=FLEET_REGION,
        help="the region whose object sizes and street layout the fleet's streets follow (default "
        f"{FLEET_REGION}; the source is {SOURCE_REGION}, as Waymo's cities)",
    )
    from drivetl.commands._tta import add_tta_argument
    from drivetl.workflows.demo import EVAL_TTA

    add_tta_argument(
        parser, EVAL_TTA, "the LiDAR-only evaluation; the one-pass figures are reported beside it"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rerun every stage from nothing, even those already done (clears the simulated frames, and the "
        "pretraining run so it does not resume from its last checkpoint)",
    )
    parser.add_argument(
        "--until",
        help="stop after this stage (source, fleet, pretrain, adapt, scratch, "
        "[fusion_pretrain, fusion_adapt,] evaluate)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `drivetl demo`; returns the exit code."""
    from drivetl.workflows.demo import DemoPlan, run_demo

    plan = DemoPlan.for_scale(
        args.out,
        args.scale,
        args.seed,
        workers=max(1, args.workers),
        modality=args.modality,
        fleet_region=args.fleet_region,
        tta=args.tta,
    )
    print(
        f"drivetl demo: {plan.modality}, scale {plan.scale:g}, seed {plan.seed}, fleet region "
        f"{plan.fleet_region}, folder {plan.out}"
    )
    print(
        f"  source {plan.source_frames} frames; fleet {plan.fleet_train_frames} train "
        f"({plan.labeled_frames} labeled) / {plan.fleet_val_frames} val / {plan.fleet_test_frames} test; "
        f"pretrain {plan.pretrain_steps} steps, fine-tune {plan.finetune_steps} steps"
        + (" (LiDAR-only and fusion models each)" if plan.fusion else "")
    )
    result = run_demo(plan, log=lambda m: print(m, flush=True), force=args.force, until=args.until)
    if result.table:
        print()
        print(result.table)
        print(f"report: {result.report}")
    ran = {k: v for k, v in result.seconds.items() if v is not None}
    if ran:
        print("stage      wall s   CPU s")
        for name, wall in ran.items():
            print(f"{name:<9} {wall:7.0f} {result.cpu_seconds.get(name) or 0.0:7.0f}")
    load = result.load_average
    total_cpu = sum(v for v in result.cpu_seconds.values() if v is not None)
    print(
        f"demo wall time: {result.wall:.0f} s, {total_cpu:.0f} CPU s; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    return 0
