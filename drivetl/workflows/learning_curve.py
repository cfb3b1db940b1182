"""Learning curves: 3D AP at Waymo's IoU thresholds against fine-tuning steps (`tools/learning_curve.py`).

One run per model, not one per point: the demo's adapted recipe (LoRA + head on the pretrained
detector) and its from-scratch recipe (every tensor, from a random initialization), on the same
labeled fleet frames, each trained for the longest step count of the curve and saving its weights at
every listed step (`drivetl.train.cli.StepCheckpoints`). Every saved checkpoint is then evaluated on
the fleet test split exactly as the demo evaluates (3D IoU at vehicle 0.7 / pedestrian 0.5, LEVEL_2,
boxes within the models' ±25.6 m range), with BEV-IoU and centre-distance mAP of the same predictions
kept in the JSON.

Source-only is a horizontal line: the pretrained checkpoint both fine-tuning runs start from,
evaluated once (it never trains on fleet data, so it has no fine-tuning steps). The adapted curve
starts on it: at step 0 the LoRA adapters are the identity and the head is the pretrained head.

The data and the pretraining are the demo's own stages (`drivetl.workflows.demo.run_demo` up to
``pretrain``), so pointing ``out`` at a finished LiDAR-only demo folder of the same plan reuses its
frames and pretrained model. A rerun skips every run and evaluation whose record matches the plan.

Note that the learning-rate schedule (warm-up, then cosine decay) spans the whole run, so the point
at step N is not the model a run of N steps would end with; that is the price of one run per model.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivetl._io import atomic_write_bytes, atomic_write_text
from drivetl.errors import ConfigError

__all__ = [
    "CURVE_MODELS",
    "CurvePlan",
    "curve_table",
    "default_steps",
    "plot_curve",
    "points_from_metrics",
    "run_curve",
]

#: curve name -> fine-tuning variant of the demo (`_demo_stages.VARIANTS`)
CURVE_MODELS: dict[str, str] = {"adapted": "adapt", "scratch": "scratch"}
#: the demo's headline matcher first, then the same predictions under the other two
_MATCHER, _EXTRA = "iou", ("bev", "distance")


def default_steps(finetune_steps: int) -> tuple[int, ...]:
    """0, then 1/8, 1/4, 1/2, 1, 2 and 4 times the demo's fine-tuning steps (each at least 1)."""
    f = max(1, int(finetune_steps))
    return tuple(sorted({0, *(max(1, round(f * m)) for m in (0.125, 0.25, 0.5, 1, 2, 4))}))


@dataclass(frozen=True)
class CurvePlan:
    """demo: the data and pretraining plan (a LiDAR-only `DemoPlan`); steps: fine-tuning step counts
    whose checkpoints are evaluated (ascending; the runs last `max(steps)` steps)."""

    demo: Any
    steps: tuple[int, ...]

    def __post_init__(self) -> None:
        steps = tuple(int(s) for s in self.steps)
        if not steps or any(s < 0 for s in steps) or max(steps) < 1:
            raise ConfigError(f"--steps {list(self.steps)[:10]}: give step counts >= 0, the largest >= 1")
        if getattr(self.demo, "fusion", False):
            raise ConfigError("the learning curve runs the LiDAR-only demo models; use --modality lidar")
        object.__setattr__(self, "steps", tuple(sorted(set(steps))))

    @property
    def root(self) -> Path:
        """Where the curve's runs, evaluations, JSON and figure go: ``<demo folder>/curve``."""
        return self.demo.path("curve")

    def data_params(self) -> dict[str, Any]:
        """What the curve depends on besides its steps: the demo's data, pretraining and fine-tuning
        recipe (not the demo's own fine-tuning step count, nor its test-time augmentation: the
        curve's points are one pass per frame)."""
        d = self.demo.params("evaluate")
        d.pop("finetune_steps", None)
        d.pop("tta", None)
        return d

    def params(self, model: str) -> dict[str, Any]:
        """What a curve run's checkpoints depend on (its record)."""
        return {**self.data_params(), "model": model, "steps": list(self.steps)}


def _record_matches(path: Path, params: Mapping[str, Any]) -> bool:
    try:
        return json.loads(path.read_text()).get("params") == dict(params)
    except (OSError, ValueError):
        return False


def _train(plan: CurvePlan, model: str, log: Callable[[str], Any]) -> dict[int, Path]:
    """The run of `model` with a checkpoint at every step of the plan (skipped when done)."""
    from drivetl.train.cli import step_checkpoint
    from drivetl.workflows import _demo_stages as stages

    root = plan.root / "runs" / model
    steps_dir = root / "steps"
    ckpts = {s: step_checkpoint(steps_dir, s) for s in plan.steps}
    record = root / "curve_run.json"
    if _record_matches(record, plan.params(model)) and all(p.is_file() for p in ckpts.values()):
        log(f"curve {model}: {len(ckpts)} checkpoints present, skipped")
        return ckpts
    shutil.rmtree(root, ignore_errors=True)
    log(f"curve {model}: {max(plan.steps)} steps, checkpoints at {list(plan.steps)}")
    callback = {
        "class_path": "drivetl.train.cli.StepCheckpoints",
        "init_args": {"steps": list(plan.steps), "dirpath": str(steps_dir.resolve())},
    }
    t = time.perf_counter()
    stages.finetune_job(
        plan.demo,
        CURVE_MODELS[model],
        root,
        plan.root / "configs" / f"{model}.yaml",
        plan.demo.labeled_fraction,
        max(plan.steps),
        log,
        callbacks=[callback],
    )
    missing = [s for s, p in ckpts.items() if not p.is_file()]
    if missing:
        raise RuntimeError(f"curve {model}: the run saved no checkpoint for steps {missing}")
    doc = {"params": plan.params(model), "seconds": round(time.perf_counter() - t, 1)}
    atomic_write_text(record, json.dumps(doc, indent=1) + "\n")
    return ckpts


def _evaluate(
    plan: CurvePlan, data: Any, specs: Sequence[str], names: Sequence[str], out: Path, params: Mapping
) -> dict[str, Any]:
    """metrics.json of `specs` on the fleet test split (cached by `params` in ``out/record.json``)."""
    from drivetl.workflows import _demo_stages as stages
    from drivetl.workflows.evaluate import evaluate

    record = out / "record.json"
    if not (_record_matches(record, params) and (out / "metrics.json").is_file()):
        shutil.rmtree(out, ignore_errors=True)
        evaluate(
            list(specs),
            data,
            out,
            names=list(names),
            matcher=_MATCHER,
            extra_matchers=_EXTRA,
            range_edges=stages.RANGE_EDGES,
            batch_size=plan.demo.batch_size,
            render_frames=0,
            figures=False,
            score_threshold=0.1,
            log=None,
        )
        atomic_write_text(record, json.dumps({"params": dict(params)}, indent=1) + "\n")
    return json.loads((out / "metrics.json").read_text())


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


def points_from_metrics(doc: Mapping[str, Any], steps: Mapping[str, int | None], model: str) -> list[dict]:
    """One point per evaluated model of an evaluation's metrics.json `doc`.

    steps: evaluated model name -> its training step (None: not a curve point, e.g. source-only).
    Each point: model, step, map / maph and per-class ap / aph (the headline matcher, LEVEL_2, all
    ranges), and ``map_<matcher>`` for the other matchers of the same predictions (None: no ground
    truth)."""
    from drivetl.eval import DetectionResult

    other = doc.get("other_matchers") or {}
    points = []
    for m in doc["models"]:
        if m["name"] not in steps:
            continue
        res = DetectionResult.from_dict(m["result"])
        point: dict[str, Any] = {
            "model": model,
            "step": steps[m["name"]],
            "map": _num(res.mean("ap")),
            "maph": _num(res.mean("aph")),
            "ap": {c: _num(res.ap(c)) for c in res.classes},
            "aph": {c: _num(res.aph(c)) for c in res.classes},
        }
        for matcher, by_model in other.items():
            if m["name"] in by_model:
                point[f"map_{matcher}"] = _num(DetectionResult.from_dict(by_model[m["name"]]).mean("ap"))
        points.append(point)
    return sorted(points, key=lambda p: -1 if p["step"] is None else p["step"])


def run_curve(plan: CurvePlan, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Data and pretraining (the demo's stages), one run per model, every checkpoint evaluated;
    writes ``learning_curve.json`` and ``learning_curve.png`` into `plan.root` and returns the JSON."""
    from drivetl.workflows import _demo_stages as stages
    from drivetl.workflows.demo import run_demo
    from drivetl.workflows.evaluate import open_eval_data

    t0 = time.perf_counter()
    run_demo(plan.demo, log=log, until="pretrain")
    data = open_eval_data(plan.demo.path("fleet"), "team", "test")
    pre = str(stages.pretrained_ckpt(plan.demo).resolve())
    source = _evaluate(
        plan, data, [pre], ["source-only"], plan.root / "eval" / "source-only", plan.data_params()
    )
    points = points_from_metrics(source, {"source-only": None}, "source-only")
    seconds: dict[str, float] = {}
    for model in CURVE_MODELS:
        t = time.perf_counter()
        ckpts = _train(plan, model, log)
        names = {f"{model} step {s}": s for s in ckpts}
        log(f"curve {model}: evaluating {len(names)} checkpoints on {len(data)} test frames")
        doc = _evaluate(
            plan,
            data,
            [str(p.resolve()) for p in ckpts.values()],
            list(names),
            plan.root / "eval" / model,
            plan.params(model),
        )
        points += points_from_metrics(doc, names, model)
        seconds[model] = round(time.perf_counter() - t, 1)
    curve = {
        "what": (
            "3D AP at Waymo's IoU thresholds (vehicle 0.7, pedestrian 0.5), LEVEL_2, fleet test split, "
            "boxes within the models' range; map_bev / map_distance: the same predictions matched by "
            "BEV IoU at the same thresholds / by centre distance (2 m)"
        ),
        "x": "fine-tuning steps (batch of 4 frames); source-only: the pretrained model, no fine-tuning",
        "plan": {**plan.data_params(), "labeled_frames": plan.demo.labeled_frames, "steps": list(plan.steps)},
        "test_frames": len(data),
        "points": points,
        "seconds": {**seconds, "total": round(time.perf_counter() - t0, 1)},
    }
    atomic_write_text(plan.root / "learning_curve.json", json.dumps(curve, indent=1, allow_nan=False) + "\n")
    plot_curve(curve, plan.root / "learning_curve.png")
    log(curve_table(curve))
    return curve


def curve_table(curve: Mapping[str, Any]) -> str:
    """Markdown: one row per step, a column per model (mAP, 3D IoU), source-only in the title."""
    points = curve["points"]
    ref = next((p for p in points if p["model"] == "source-only"), None)
    models = [m for m in dict.fromkeys(p["model"] for p in points) if m != "source-only"]
    steps = sorted({p["step"] for p in points if p["step"] is not None})

    def cell(model: str, step: int) -> str:
        p = next((p for p in points if p["model"] == model and p["step"] == step), None)
        return "" if p is None else ("n/a" if p["map"] is None else f"{p['map']:.3f}")

    ref_text = "n/a" if ref is None or ref["map"] is None else f"{ref['map']:.3f}"
    lines = [
        f"3D mAP (LEVEL_2, fleet test split) against fine-tuning steps; source-only {ref_text}",
        "",
        "| steps | " + " | ".join(models) + " |",
        "|---:|" + "---:|" * len(models),
    ]
    lines += [f"| {s} | " + " | ".join(cell(m, s) for m in models) + " |" for s in steps]
    return "\n".join(lines) + "\n"


def plot_curve(curve: Mapping[str, Any], path: Path) -> Path:
    """Three panels (mAP, then AP per class) against fine-tuning steps on a symmetric-log axis (step
    0 included): one line per model, source-only as a dashed horizontal line."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = curve["points"]
    classes = list(next(iter(points))["ap"]) if points else []
    classes = [c for c in classes if any(p["ap"].get(c) is not None for p in points)]
    panels: list[str | None] = [None, *classes]
    thresholds = {"vehicle": 0.7, "pedestrian": 0.5, "cyclist": 0.5, "sign": 0.5}
    fig = Figure(figsize=(4.2 * len(panels), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    steps = sorted({p["step"] for p in points if p["step"] is not None})
    positive = [s for s in steps if s > 0]
    colours = {"adapted": "#c44e52", "scratch": "#4c72b0"}

    def value(p: Mapping[str, Any], cls: str | None) -> float:
        v = p["map"] if cls is None else p["ap"].get(cls)
        return math.nan if v is None else v

    top = 0.0
    for ax, cls in zip(axes, panels, strict=True):
        for p in points:
            if p["model"] == "source-only" and not math.isnan(value(p, cls)):
                ax.axhline(value(p, cls), color="0.35", linestyle="--", label="source-only")
                top = max(top, value(p, cls))
        for model in dict.fromkeys(p["model"] for p in points if p["step"] is not None):
            series = sorted((p["step"], value(p, cls)) for p in points if p["model"] == model)
            ys = [y for _, y in series]
            top = max([top] + [y for y in ys if not math.isnan(y)])
            ax.plot([x for x, _ in series], ys, marker="o", label=model, color=colours.get(model))
        if positive:
            ax.set_xscale("symlog", linthresh=positive[0])
            ax.set_xticks(steps, [str(s) for s in steps], fontsize=7)
        name = "3D mAP" if cls is None else f"{cls} 3D AP@{thresholds.get(cls, 0.5):g}"
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("fine-tuning steps", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.set_ylim(0, max(0.05, min(1.0, 1.15 * top)))
    axes[0].set_ylabel("AP, LEVEL_2, fleet test split")
    axes[0].legend(fontsize=8, loc="best")
    plan = curve.get("plan") or {}
    fig.suptitle(
        f"Learning curve: {plan.get('labeled_frames', '?')} labeled fleet frames; pretrained "
        f"{plan.get('pretrain_steps', '?')} steps on {plan.get('source_frames', '?')} source frames; "
        f"seed {plan.get('seed', '?')}",
        fontsize=10,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path
