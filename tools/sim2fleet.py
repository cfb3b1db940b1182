"""The sim-to-fleet study: how much each adaptation method buys, as a function of labeled target data.

Waymo-like source (TFRecords) -> fleet_xt32 target (team format), the same stages as `drivetl demo`
at a GPU-sized scale: one pretraining on the source, then for every labeled fraction of the fleet
train split, every adapter method (LoRA, bottleneck, FiLM, BatchNorm re-estimation, per-domain
norms), full fine-tuning, and training from scratch; source-only (no target labels) and the
target-only oracle (from scratch on every target label) are the two reference lines. Every model is
evaluated on the held-out fleet test streets.

Outputs in --out: ``study.json`` (every number), ``study.md`` (one table: mAP per method and
fraction, with trainable-parameter shares) and ``ap_vs_fraction.png`` (one line per method).
Everything is seeded (--seed); a rerun skips every run whose outputs exist.

    python tools/sim2fleet.py --out runs/sim2fleet               # the full study (GPU: ~1-2 hours)
    python tools/sim2fleet.py --out runs/sim2fleet_quick --quick  # a CPU sanity run (~20-30 minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

from drivetl._io import atomic_write_bytes, atomic_write_text
from drivetl.eval import DetectionResult
from drivetl.workflows import _demo_stages as stages
from drivetl.workflows.demo import DemoPlan
from drivetl.workflows.evaluate import evaluate

METHODS = ("lora", "bottleneck", "film", "norm", "domain_norm", "full", "scratch")


def study_plan(out: Path, quick: bool, seed: int, workers: int) -> tuple[DemoPlan, list[float], int]:
    """(data/pretraining plan, labeled fractions, fine-tuning steps)."""
    if quick:
        plan = DemoPlan.for_scale(out, 0.5, seed, workers)
        return replace(plan, pretrain_steps=60), [0.1, 1.0], 30
    plan = DemoPlan(
        out=out,
        seed=seed,
        scale=10.0,
        source_frames=400,
        fleet_train_frames=300,
        fleet_val_frames=30,
        fleet_test_frames=100,
        pretrain_steps=4000,
        finetune_steps=800,
        batch_size=8,
        workers=workers,
    )
    return plan, [0.02, 0.05, 0.1, 0.25, 1.0], 800


def _log(msg: str) -> None:
    print(msg, flush=True)


def _done(path: Path) -> bool:
    return path.is_file()


def _evaluate_one(plan: DemoPlan, spec: str, name: str, out: Path, matcher: str) -> dict:
    """Evaluate one model on the fleet test split (cached in out/metrics.json)."""
    if not _done(out / "metrics.json"):
        evaluate(
            [spec],
            plan.path("fleet"),
            out,
            names=[name],
            split="test",
            matcher=matcher,
            extra_matchers=("distance", "iou"),
            batch_size=plan.batch_size,
            render_frames=0,
            figures=False,
            score_threshold=0.1,
            log=None,
        )
    doc = json.loads((out / "metrics.json").read_text())
    res = DetectionResult.from_dict(doc["models"][0]["result"])
    other = {m: DetectionResult.from_dict(r[name]) for m, r in doc.get("other_matchers", {}).items()}
    row = {"map": res.mean("ap"), "maph": res.mean("aph")}
    for m, r in other.items():
        row[f"map_{m}"] = r.mean("ap")
    return row


def run_study(
    out: Path,
    quick: bool,
    seed: int,
    methods: list[str],
    fractions: list[float] | None,
    matcher: str,
    workers: int,
) -> dict:
    plan, default_fractions, steps = study_plan(out, quick, seed, workers)
    fractions = fractions or default_fractions
    t0 = time.perf_counter()
    _log(
        f"sim2fleet: source {plan.source_frames} frames, fleet {plan.fleet_train_frames}/"
        f"{plan.fleet_val_frames}/{plan.fleet_test_frames}, fractions {fractions}, methods {methods}, "
        f"seed {seed}"
    )
    if not stages.source_complete(plan):
        stages.simulate_source(plan, stages.simulate, _log)
    if not plan.path("fleet", "splits", "test.txt").is_file():
        stages.simulate_fleet(plan, stages.simulate, _log)
    if not stages.pretrained_ckpt(plan).is_file():
        stages.pretrain(plan, _log)
    pre = str(stages.pretrained_ckpt(plan).resolve())
    rows: list[dict] = []
    ref = _evaluate_one(plan, pre, "source-only", plan.path("eval", "source-only"), matcher)
    rows.append({"method": "source-only", "fraction": 0.0, "trainable_share": 0.0, **ref})
    for fraction in fractions:
        for method in methods:
            tag = f"{method}_f{fraction:g}"
            run = plan.path("runs", tag)
            if not _done(run / "finetune_summary.json"):
                _log(f"== {tag}")
                stages.finetune_job(
                    plan, method, run, plan.path("configs", f"{tag}.yaml"), fraction, steps, _log
                )
            summary = json.loads((run / "finetune_summary.json").read_text())
            adapter = method not in ("full", "scratch")
            spec = f"{run / 'adapters.safetensors'}@{pre}" if adapter else str(run / "finetuned.ckpt")
            metrics = _evaluate_one(plan, spec, tag, plan.path("eval", tag), matcher)
            share = summary.get("trainable_share", 1.0)
            name = "target-only oracle" if method == "scratch" and fraction == 1.0 else method
            rows.append({"method": name, "fraction": fraction, "trainable_share": share, **metrics})
            _log(f"   {tag}: mAP {metrics['map']:.3f} (trainable {share:.1%})")
    study = {
        "seed": seed,
        "quick": quick,
        "matcher": matcher,
        "plan": plan.params("evaluate"),
        "finetune_steps": steps,
        "fractions": fractions,
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(out / "study.json", json.dumps(study, indent=1, allow_nan=True) + "\n")
    atomic_write_text(out / "study.md", table(study))
    plot(study, out / "ap_vs_fraction.png")
    _log(table(study))
    return study


def table(study: dict) -> str:
    """Markdown: one row per method, one column per labeled fraction (mAP, LEVEL_2, all ranges)."""
    fractions = study["fractions"]
    rows = study["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))

    def cell(method: str, f: float) -> str:
        for r in rows:
            if r["method"] == method and (r["fraction"] == f or method == "source-only"):
                return "n/a" if math.isnan(r["map"]) else f"{r['map']:.3f}"
        return ""

    shares = {r["method"]: r["trainable_share"] for r in rows}
    head = "| method | trainable | " + " | ".join(f"{f:.0%} labeled" for f in fractions) + " |"
    lines = [
        f"mAP ({study['matcher']} matching, LEVEL_2, fleet test streets), seed {study['seed']}",
        "",
        head,
        "|---|---:|" + "---:|" * len(fractions),
    ]
    for m in methods:
        lines.append(f"| {m} | {shares[m]:.1%} | " + " | ".join(cell(m, f) for f in fractions) + " |")
    return "\n".join(lines) + "\n"


def plot(study: dict, path: Path) -> None:
    """AP vs labeled fraction, one line per method (source-only as a horizontal line)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rows = study["rows"]
    for m in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["fraction"], r["map"]) for r in rows if r["method"] == m)
        if m == "source-only":
            ax.axhline(pts[0][1], color="0.4", linestyle="--", label="source-only")
        elif m == "target-only oracle":
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "k*", markersize=10, label=m)
        else:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("labeled fraction of the fleet train split")
    ax.set_ylabel(f"mAP ({study['matcher']}, LEVEL_2)")
    ax.set_title("sim-to-fleet: Waymo-like -> fleet_xt32")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/sim2fleet"))
    parser.add_argument("--quick", action="store_true", help="CPU sanity run: small sets, two fractions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--fractions", help="comma-separated labeled fractions (default: by --quick)")
    parser.add_argument("--matcher", choices=("iou", "distance"), default="iou")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {METHODS}")
    fractions = [float(f) for f in args.fractions.split(",")] if args.fractions else None
    run_study(args.out, args.quick, args.seed, methods, fractions, args.matcher, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
