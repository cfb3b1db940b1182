"""Learning curve: 3D AP at Waymo's IoU thresholds against fine-tuning steps, adapted vs scratch, with
source-only as a reference line (`drivetl.workflows.learning_curve`).

The demo's data and pretraining (its own stages, at --scale), then one fine-tuning run per model that
saves its weights at every listed step; each checkpoint is evaluated on the fleet test split
(vehicle 3D IoU 0.7, pedestrian 0.5, LEVEL_2). Writes ``<out>/curve/learning_curve.json`` (every
point) and ``<out>/curve/learning_curve.png``. A rerun skips what is done; with --out pointing at a
finished LiDAR-only demo folder of the same scale and seed, its data and pretrained model are reused.

    python tools/learning_curve.py --out runs/learning_curve    # scale 1 (docs/evaluate.md)
    python tools/learning_curve.py --out runs/lc_tiny --scale 0.05 --steps 0,2,4   # a smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drivetl.sim.regions import REGIONS
from drivetl.workflows._demo_config import FLEET_REGION
from drivetl.workflows.demo import DemoPlan
from drivetl.workflows.learning_curve import CurvePlan, default_steps, run_curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/learning_curve"), help="demo folder")
    parser.add_argument("--scale", type=float, default=1.0, help="the demo's scale (frames and pretraining)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="simulation/data worker processes")
    parser.add_argument(
        "--fleet-region",
        choices=REGIONS,
        default=FLEET_REGION,
        help=f"the region of the fleet's streets, as `drivetl demo --fleet-region` (default {FLEET_REGION})",
    )
    parser.add_argument(
        "--steps",
        help="comma-separated fine-tuning step counts to evaluate (default: 0 and 1/8 .. 4 times the "
        "demo's fine-tuning steps at --scale)",
    )
    args = parser.parse_args(argv)
    demo = DemoPlan.for_scale(
        args.out, args.scale, args.seed, workers=max(1, args.workers), fleet_region=args.fleet_region
    )
    try:
        steps = tuple(int(s) for s in args.steps.split(",") if s) if args.steps else None
    except ValueError:
        parser.error(f"--steps {args.steps!r}: give comma-separated integers")
    plan = CurvePlan(demo, steps or default_steps(demo.finetune_steps))
    print(
        f"learning curve: scale {demo.scale:g}, seed {demo.seed}, fleet region {demo.fleet_region}, "
        f"folder {demo.out}; source "
        f"{demo.source_frames} frames, pretrain {demo.pretrain_steps} steps; {demo.labeled_frames} labeled "
        f"fleet frames, {demo.fleet_test_frames} test frames; checkpoints at {list(plan.steps)}",
        flush=True,
    )
    curve = run_curve(plan, log=lambda m: print(m, flush=True))
    print(f"wrote {plan.root / 'learning_curve.json'} and {plan.root / 'learning_curve.png'}")
    print(f"wall time: {curve['seconds']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
