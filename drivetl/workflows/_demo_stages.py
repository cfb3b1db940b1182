"""The demo's stages: simulate, pretrain, fine-tune (adapters and from scratch), evaluate.

Each function takes the `DemoPlan` and a `log` callable, calls the same building blocks as the
commands (`simulate_dataset`, `run_pretrain`, `run_finetune`, `evaluate`) in this process, and
writes only under ``plan.out``. The simulator (open3d) and Lightning are imported when a stage runs.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivetl._io import atomic_write_text
from drivetl.workflows import _demo_config as cfg

#: the demo's headline matching: 3D IoU at Waymo's thresholds (vehicle 0.7, pedestrian 0.5); the
#: report follows with BEV IoU and centre-distance tables of the same predictions
MATCHER = "iou"
EXTRA_MATCHERS = ("bev", "distance")
RANGE_EDGES = (0.0, 10.0, 20.0, math.inf)
MODELS = ("scratch", "source-only", "adapted")


#: simulate(rig, frames, out, format, seed, workers, progress, region) -> summary lines (`simulate`
#: by default)
Simulate = Callable[..., list[str]]


def simulate(
    rig, frames: int, out: Path, fmt: str, seed: int, workers: int, progress, region: str
) -> list[str]:
    """Render `frames` frames of `rig` into `out` (Waymo or team format) in streets of `region`'s
    statistics (`drivetl.sim.regions`); the summary lines."""
    from drivetl.sim import SimulationPlan, simulate_dataset

    plan = SimulationPlan(
        rig=rig,
        frames=frames,
        out=out,
        format=fmt,
        seed=seed,
        frames_per_segment=10,
        shard_frames=10,
        region=region,
    )
    return simulate_dataset(plan, workers=workers, progress=progress).lines()


def _sim(
    simulate: Simulate,
    rig,
    frames: int,
    out: Path,
    fmt: str,
    seed: int,
    workers: int,
    log: Callable,
    region: str,
) -> None:
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 10 == 0 or done[0] == frames:
            log(f"  {rig.name}: {done[0]}/{frames} frames")

    for line in simulate(rig, frames, out, fmt, seed, workers, progress, region):
        log("  " + line)


def sim_workers(plan) -> int:
    """Simulation processes: `plan.workers`, but at least two where the machine has two cores (each
    frame is simulated from its own seed, so the frames do not depend on the count; the demo's 240
    source frames take 24 s on one process)."""
    return max(plan.workers, min(2, os.cpu_count() or 1))


def simulate_source(plan, simulate: Simulate, log: Callable, rig=None) -> None:
    """The source folder (Waymo format) from `rig` (default: the demo's LiDAR-only source rig)."""
    _sim(
        simulate,
        rig or cfg.source_rig(),
        plan.source_frames,
        plan.path("source"),
        "waymo",
        plan.seed,
        sim_workers(plan),
        log,
        cfg.SOURCE_REGION,
    )


def source_complete(plan) -> bool:
    """True when the source folder holds one TFRecord per simulated street."""
    return len(list(plan.path("source").glob("*.tfrecord"))) >= plan.source_frames // 10


def simulate_fleet(plan, simulate: Simulate, log: Callable, rig=None) -> None:
    """The fleet folder from `rig` (default: the demo's LiDAR-only fleet rig), then its splits by
    street: train, then val, then test segments."""
    from drivetl.data.formats.team import TeamReader

    root = plan.path("fleet")
    _sim(
        simulate,
        rig or cfg.fleet_rig(),
        plan.fleet_frames,
        root,
        "team",
        plan.seed + 1000,
        sim_workers(plan),
        log,
        plan.fleet_region,
    )
    keys = sorted(TeamReader(root).keys)
    segments = sorted({k.segment for k in keys})
    n_train, n_val = plan.fleet_train_frames // 10, plan.fleet_val_frames // 10
    parts = {
        "train": segments[:n_train],
        "val": segments[n_train : n_train + n_val],
        "test": segments[n_train + n_val :],
    }
    for name, segs in parts.items():
        members = [k for k in keys if k.segment in set(segs)]
        atomic_write_text(
            root / "splits" / f"{name}.txt", "".join(f"{k.segment}/{k.timestamp_us}\n" for k in members)
        )
        log(f"  split {name}: {len(members)} frames ({len(segs)} streets)")


def pretrained_ckpt(plan, run: str = "pretrain") -> Path:
    """The pretrained checkpoint of the pretraining run folder ``runs/<run>``."""
    return plan.path("runs", run, "pretrained.ckpt")


def _quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")


def pretrain(
    plan, log: Callable, run: str = "pretrain", config_fn: Callable[[Path], dict] | None = None
) -> None:
    """Pretrain into ``runs/<run>`` (resuming its last checkpoint); config_fn(run folder) -> the
    config (default: the demo's LiDAR-only pretraining, `_demo_config.pretrain_config`)."""
    from drivetl.train.cli import run_pretrain

    _quiet_lightning()
    root = plan.path("runs", run).resolve()
    data = plan.path("source").resolve()
    spec = (
        config_fn(root)
        if config_fn is not None
        else cfg.pretrain_config(root, data, plan.pretrain_steps, plan.batch_size, plan.workers, plan.seed)
    )
    config = cfg.write_config(plan.path("configs", f"{run}.yaml"), spec)
    args = ["--config", str(config)]
    last = root / "checkpoints" / "last.ckpt"
    if last.is_file():
        log(f"  resuming from {last}")
        args += ["--ckpt_path", str(last)]
    log(f"  drivetl pretrain --config {config}")
    run_pretrain(args)
    _copy(last, pretrained_ckpt(plan, run))


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


#: fine-tuning variants by name: (adapter method, freezing policy, start from the pretrained model)
VARIANTS: dict[str, tuple[str, str, bool]] = {
    "adapt": ("lora", "adapters+head", True),
    "lora": ("lora", "adapters+head", True),
    "bottleneck": ("bottleneck", "adapters+head", True),
    "film": ("film", "adapters+head", True),
    "norm": ("norm", "adapters+head", True),
    "domain_norm": ("domain_norm", "adapters+head", True),
    "full": ("none", "full", True),
    "scratch": ("none", "full", False),
}


def finetune_job(
    plan,
    variant: str,
    root: Path,
    config_path: Path,
    labeled_fraction: float,
    steps: int,
    log: Callable,
    *,
    start: Path | None = None,
    callbacks: list[dict] | None = None,
    paste: bool = True,
) -> Path:
    """Fine-tune `variant` (a `VARIANTS` key) into the run folder `root`; returns the run folder.

    Starts from the pretrained checkpoint (`start`, default the demo's LiDAR-only one), or (from
    scratch) from a random initialization saved like one, so both runs share the data, the steps
    and the selection; the peak learning rate is `_demo_config.FINETUNE_LR` from the pretrained
    model, `SCRATCH_LR` from scratch. callbacks: ``class_path``/``init_args`` entries for
    ``trainer.callbacks``. paste: with object paste (`_demo_config.finetune_config`)."""
    from drivetl.train.cli import run_finetune

    _quiet_lightning()
    method, freeze, pretrained = VARIANTS[variant]
    root = root.resolve()
    if not pretrained:
        start = cfg.write_init_checkpoint(root / "init.ckpt", plan.seed)
    start = Path(start or pretrained_ckpt(plan)).resolve()
    spec = cfg.finetune_config(
        root,
        start,
        plan.path("fleet").resolve(),
        method=method,
        freeze=freeze,
        steps=steps,
        labeled_fraction=labeled_fraction,
        batch_size=plan.batch_size,
        workers=plan.workers,
        seed=plan.seed,
        lr=cfg.FINETUNE_LR if pretrained else cfg.SCRATCH_LR,
        paste=paste,
    )
    if callbacks:
        spec["trainer"]["callbacks"] = list(callbacks)
    config = cfg.write_config(config_path, spec)
    for stale in ("checkpoints", "adapters.safetensors", "finetuned.ckpt"):
        target = root / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    log(f"  drivetl finetune --config {config}")
    run_finetune(["--config", str(config)])
    return root


def finetune(plan, kind: str, log: Callable) -> None:
    """kind "adapt": LoRA + head on the pretrained model; "scratch": every tensor from a random init."""
    finetune_job(
        plan,
        kind,
        plan.path("runs", kind),
        plan.path("configs", f"{kind}.yaml"),
        plan.labeled_fraction,
        plan.finetune_steps,
        log,
    )


def model_specs(plan) -> list[str]:
    """The --ckpt values of the evaluation, in `MODELS` order."""
    pre = pretrained_ckpt(plan).resolve()
    return [
        str(plan.path("runs", "scratch", "finetuned.ckpt").resolve()),
        str(pre),
        f"{plan.path('runs', 'adapt', 'adapters.safetensors').resolve()}@{pre}",
    ]


def evaluate(plan, log: Callable) -> None:
    """Evaluate scratch, source-only and adapted on the fleet's test split into ``report/``, with the
    plan's test-time augmentation (`DemoPlan.tta`); with one, the one-pass evaluation of the same
    models goes to ``report/one_pass/``."""
    from drivetl.workflows.evaluate import evaluate as run_eval

    common = {
        "names": list(MODELS),
        "split": "test",
        "matcher": MATCHER,
        "extra_matchers": EXTRA_MATCHERS,
        "range_edges": RANGE_EDGES,
        "batch_size": plan.batch_size,
        "score_threshold": 0.1,
        "log": lambda m: log("  " + m),
    }
    specs, fleet = model_specs(plan), plan.path("fleet")
    run_eval(specs, fleet, plan.path("report"), render_frames=2, render_score=0.15, tta=plan.tta, **common)
    if plan.tta != "none":
        run_eval(specs, fleet, plan.path("report", "one_pass"), render_frames=0, figures=False, **common)


def summary_table(report_dir: Path) -> tuple[str, dict[str, Any]]:
    """(the comparison table, {model: DetectionResult}) of a finished demo's metrics.json."""
    import json

    from drivetl.eval import DetectionResult, comparison_table

    doc = json.loads((report_dir / "metrics.json").read_text())
    results = {m["name"]: DetectionResult.from_dict(m["result"]) for m in doc["models"]}
    table = comparison_table(results)
    names = {"bev": "BEV IoU (Waymo thresholds)", "distance": "centre distance (2 m)", "iou": "3D IoU"}
    head = "3D IoU at Waymo's thresholds (vehicle 0.7, pedestrian 0.5)"
    tta = (doc.get("data") or {}).get("tta_views")
    if tta:
        head += f", test-time augmentation: {tta}"
    table = head + ". " + table
    for matcher, res in (doc.get("other_matchers") or {}).items():
        other = {n: DetectionResult.from_dict(r) for n, r in res.items()}
        table += (
            f"\nThe same predictions, {names.get(matcher, matcher)} matching:\n\n"
            + comparison_table(other).split("\n", 2)[2]
        )
    errors = doc.get("box_errors") or {}
    if errors:
        table += "\nBox errors of centre-distance matches (medians; flips: share turned around):\n"
        table += f"  {'model':<12} {'class':<11} BEV m  z m   scale orient. flips\n"
        keys = ("translation_bev", "translation_z", "scale", "orientation")
        for model, per_class in errors.items():
            for cls, e in per_class.items():
                vals = [e.get(k + "_median") for k in keys] + [e.get("flip_share")]
                text = ["n/a" if v is None else f"{v:.2f}" for v in vals]
                table += f"  {model:<12} {cls:<11} " + "  ".join(text) + "\n"
    one_pass = report_dir / "one_pass" / "metrics.json"
    if one_pass.is_file():
        plain = json.loads(one_pass.read_text())
        res = {m["name"]: DetectionResult.from_dict(m["result"]) for m in plain["models"]}
        table += (
            "\nThe same models in one pass per frame (no test-time augmentation; report/one_pass):\n\n"
            + comparison_table(res).split("\n", 2)[2]
        )
    return table, results
