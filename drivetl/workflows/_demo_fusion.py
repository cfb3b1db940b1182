"""The fusion part of the demo (`drivetl demo --modality fusion`): camera rigs, the fusion detector,
its two training runs, and the LiDAR-only vs fusion comparison in the report.

Rigs. The source keeps the Waymo-like rig's FRONT camera: 1920 x 1280, fx = fy = 2050 px (about
50 degrees across), mild distortion (k1 0.04, k2 -0.33), 2.12 m above the ground, level. The fleet
keeps fleet_xt32's FRONT camera, which differs in all three respects: intrinsics (1920 x 1080,
fx = fy = 1000 px, about 110 degrees across), distortion (strong barrel, k1 -0.30, k2 0.09,
k3 -0.01) and mounting (1.55 m high, 0.11 m further forward, pitched 4 degrees nose down). Both
images are rendered at ``plan.camera_scale`` of their size (intrinsics scaled with the image): at
the default 0.075 the source image is 144 x 96, the fusion model's input size; the fleet's 144 x 81
is resized to it by the batch pipeline, its intrinsics with it.

Detector. The demo's LiDAR detector (`_demo_config.detector_config`, unchanged) plus a small camera
branch (`camera_encoder`): a three-stage image backbone at output stride 8, lifted to the BEV grid
by projecting every cell centre at three heights through each frame's own calibration
(`drivetl.models.CameraEncoder`), then a two-convolution fusion as wide as the LiDAR features, so
the head is the LiDAR model's. Pretraining adds the camera->LiDAR BEV alignment objective to
detection (as ``configs/pretrain/tiny_fusion.yaml``) and hides the camera branch of a frame with
probability 0.2 (camera dropout: the model keeps working from LiDAR alone). The fusion runs train
without object paste (the LiDAR-only runs paste, `_demo_config._paste`): a pasted object's points
would have no pixels in the frame's image, teaching the camera branch that objects go unseen. The
LiDAR-only vs fusion comparison therefore also compares training with and without paste.

Adaptation. The demo's LoRA recipe (adapters + head, rank 8, same steps and labeled frames). On a
camera model LoRA's default targets (`drivetl.models.adapters.METHODS`) add the image backbone's
neck, the lift's mixing convolutions and the fusion to the LiDAR backbone and neck, and the head
trains; the image backbone's stem and stages stay frozen (edges and colours transfer between
cameras, how they combine into objects seen from another height and through another lens is what
adapts). The camera geometry itself is not learned: the lift reads the fleet camera's intrinsics,
distortion and mounting from each batch. Camera dropout stays on while fine-tuning.

Report. The evaluation runs the three LiDAR-only models and the two fusion models (source-only and
adapted) on the fleet test split with fusion health (each fusion model again with its cameras
hidden), writes ``fusion.json`` and ``fusion.png`` and puts a "LiDAR-only vs fusion" section at the
top of report.md.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from drivetl._io import atomic_write_bytes, atomic_write_text
from drivetl.workflows import _demo_config as cfg
from drivetl.workflows import _demo_stages as s

__all__ = [
    "ADAPT_RUN",
    "CAMERA",
    "MODELS",
    "PAIRS",
    "PRETRAIN_RUN",
    "adapt",
    "comparison",
    "comparison_markdown",
    "detector_config",
    "evaluate",
    "fleet_rig",
    "image_size",
    "pretrain",
    "pretrain_config",
    "source_rig",
    "summary",
    "write_figure",
]

#: the camera both rigs keep
CAMERA = "FRONT"
PRETRAIN_RUN = "fusion_pretrain"
ADAPT_RUN = "fusion_adapt"
CAMERA_DROPOUT = 0.2
ALIGNMENT_WEIGHT = 0.5
#: (LiDAR-only model, fusion model) pairs of the comparison, in report order
PAIRS: tuple[tuple[str, str], ...] = (("source-only", "fusion source-only"), ("adapted", "fusion adapted"))
#: the evaluated models in report order: the LiDAR-only demo's, then the fusion models
MODELS: tuple[str, ...] = (*s.MODELS, *(fused for _, fused in PAIRS))


def _scaled(camera, scale: float):
    w, h = max(16, round(camera.width * scale)), max(16, round(camera.height * scale))
    return camera.scaled(w / camera.width, h / camera.height)


def source_rig(camera_scale: float):
    """The demo's source rig (`_demo_config.source_rig`) with the Waymo-like FRONT camera, scaled."""
    from drivetl.calib import load_rig

    cam = load_rig(cfg.rigs_dir() / "waymo_like.yaml").camera(CAMERA)
    return dataclasses.replace(cfg.source_rig(), cameras=(_scaled(cam, camera_scale),))


def fleet_rig(camera_scale: float):
    """fleet_xt32 with its FRONT camera, scaled (the demo's fleet rig plus that camera)."""
    from drivetl.calib import load_rig

    cam = load_rig(cfg.rigs_dir() / "fleet_xt32.yaml").camera(CAMERA)
    return dataclasses.replace(cfg.fleet_rig(), cameras=(_scaled(cam, camera_scale),))


def image_size(camera_scale: float) -> tuple[int, int]:
    """(height, width) of the fusion model's images: the source camera's rendered size."""
    cam = source_rig(camera_scale).camera(CAMERA)
    return cam.height, cam.width


def camera_encoder() -> dict[str, Any]:
    """The camera branch: 16 -> 32 -> 48 channels at strides 2 to 16, a 16-channel neck at stride 8,
    lifted at 0.5, 1.25 and 2 m above the ground."""
    return {
        "class_path": "drivetl.models.CameraEncoder",
        "init_args": {
            "heights": [0.5, 1.25, 2.0],
            "out_channels": 16,
            "backbone": {
                "class_path": "drivetl.models.ImageBackbone",
                "init_args": {
                    "widths": [16, 32, 48],
                    "depths": [1, 1, 1],
                    "out_channels": 16,
                    "out_stride": 8,
                },
            },
        },
    }


def detector_config() -> dict[str, Any]:
    """The demo's LiDAR detector config plus the camera branch, the fusion and the alignment head."""
    spec = copy.deepcopy(cfg.detector_config())
    args = spec["init_args"]
    args["camera"] = camera_encoder()
    args["fusion_channels"] = int(args["lidar"]["init_args"]["out_channels"])
    args["camera_dropout"] = CAMERA_DROPOUT
    args["camera_lift_stride"] = 1
    args["align_head"] = True
    return spec


def pretrain_config(plan, root: Path) -> dict[str, Any]:
    """The demo's pretraining config with the fusion detector, the alignment objective and the camera."""
    spec = cfg.pretrain_config(
        root,
        plan.path("source").resolve(),
        plan.pretrain_steps,
        plan.batch_size,
        plan.workers,
        plan.seed,
        paste=False,
    )
    model = spec["model"]["init_args"]
    model["detector"] = detector_config()
    model["objectives"] = dict(model["objectives"], alignment=ALIGNMENT_WEIGHT)
    data = spec["data"]["init_args"]
    data["image_size"] = list(image_size(plan.camera_scale))
    data["camera_names"] = [CAMERA]
    return spec


def pretrain(plan, log: Callable) -> None:
    """Pretrain the fusion detector on the source set into ``runs/fusion_pretrain``."""
    s.pretrain(plan, log, PRETRAIN_RUN, lambda root: pretrain_config(plan, root))


def adapt(plan, log: Callable) -> None:
    """The demo's adapted recipe (LoRA + head) on the fusion model, into ``runs/fusion_adapt``."""
    s.finetune_job(
        plan,
        "adapt",
        plan.path("runs", ADAPT_RUN),
        plan.path("configs", f"{ADAPT_RUN}.yaml"),
        plan.labeled_fraction,
        plan.finetune_steps,
        log,
        start=s.pretrained_ckpt(plan, PRETRAIN_RUN),
        paste=False,
    )


def model_specs(plan) -> list[str]:
    """The --ckpt values of the evaluation, in `MODELS` order."""
    pre = s.pretrained_ckpt(plan, PRETRAIN_RUN).resolve()
    adapters = plan.path("runs", ADAPT_RUN, "adapters.safetensors").resolve()
    return [*s.model_specs(plan), str(pre), f"{adapters}@{pre}"]


def evaluate(plan, log: Callable) -> None:
    """Evaluate the LiDAR-only and fusion models with fusion health; add the comparison to the report."""
    from drivetl.workflows.evaluate import evaluate as run_eval

    out = plan.path("report")
    report = run_eval(
        model_specs(plan),
        plan.path("fleet"),
        out,
        names=list(MODELS),
        split="test",
        matcher=s.MATCHER,
        extra_matchers=s.EXTRA_MATCHERS,
        range_edges=s.RANGE_EDGES,
        batch_size=plan.batch_size,
        fusion_health=True,
        render_frames=2,
        render_score=0.15,
        score_threshold=0.1,
        log=lambda m: log("  " + m),
    )
    doc = comparison(report.results, {h.name: h for h in report.fusion})
    atomic_write_text(out / "fusion.json", json.dumps(doc, indent=1, allow_nan=False) + "\n")
    write_figure(doc, out / "fusion.png")
    md = out / "report.md"
    text = md.read_text()
    at = text.find("## Comparison")
    section = comparison_markdown(doc, figure="fusion.png") + "\n"
    atomic_write_text(md, text[:at] + section + text[at:] if at >= 0 else text + "\n" + section)


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


def comparison(results: Mapping[str, Any], fusion: Mapping[str, Any]) -> dict[str, Any]:
    """The LiDAR-only vs fusion numbers of `PAIRS` as plain data (None: no ground truth).

    results: model name -> `DetectionResult` (the headline matcher); fusion: fusion model name ->
    `FusionHealth` (its `without` result: the same model with its cameras hidden). Pairs with a
    missing model are left out."""
    first = next(iter(results.values()))
    classes = list(first.classes)
    thresholds = {c: float(first.config.threshold(c)) for c in classes}
    rows = []
    for lidar_name, fusion_name in PAIRS:
        if lidar_name not in results or fusion_name not in results:
            continue
        lid, fus = results[lidar_name], results[fusion_name]
        health = fusion.get(fusion_name)
        hidden = getattr(health, "without", None)
        row: dict[str, Any] = {
            "model": lidar_name,
            "lidar": lidar_name,
            "fusion": fusion_name,
            "map": {"lidar": _num(lid.mean("ap")), "fusion": _num(fus.mean("ap"))},
            "maph": {"lidar": _num(lid.mean("aph")), "fusion": _num(fus.mean("aph"))},
            "ap": {c: {"lidar": _num(lid.ap(c)), "fusion": _num(fus.ap(c))} for c in classes},
        }
        if hidden is not None:
            row["map"]["cameras_hidden"] = _num(hidden.mean("ap"))
            row["maph"]["cameras_hidden"] = _num(hidden.mean("aph"))
            for c in classes:
                row["ap"][c]["cameras_hidden"] = _num(hidden.ap(c))
        if health is not None:
            row["heatmap_change"] = _num(health.heat_change)
            row["camera_coverage"] = _num(health.coverage)
            row["warnings"] = list(health.warnings)
        rows.append(row)
    return {
        "matching": first.config.describe(),
        "level": "LEVEL_2",
        "classes": classes,
        "thresholds": thresholds,
        "rows": rows,
    }


def _f(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def comparison_markdown(doc: Mapping[str, Any], figure: str | None = None) -> str:
    """The "LiDAR-only vs fusion" section: one row per pair, then what the camera adds, in words."""
    classes, thr = doc["classes"], doc["thresholds"]
    head = ["model", "mAP LiDAR-only", "mAP fusion", "delta", "fusion, cameras hidden"]
    head += [f"{c} AP@{thr[c]:g} LiDAR / fusion" for c in classes]
    head += ["heatmap change without cameras", "camera coverage"]
    lines = [
        "## LiDAR-only vs fusion",
        "",
        f"3D AP at Waymo's IoU thresholds, {doc['level']}, fleet test split. Both columns of a row share "
        "the recipe and the LiDAR frames; the fusion model also sees the fleet's front camera. 'Cameras "
        "hidden' runs the fusion model with every image removed (fusion health).",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for r in doc["rows"]:
        m = r["map"]
        cells = [r["model"], _f(m["lidar"]), _f(m["fusion"]), _f(_delta(m["lidar"], m["fusion"]), sign=True)]
        cells.append(_f(m.get("cameras_hidden")))
        cells += [f"{_f(r['ap'][c]['lidar'])} / {_f(r['ap'][c]['fusion'])}" for c in classes]
        change, cover = r.get("heatmap_change"), r.get("camera_coverage")
        cells += ["n/a" if change is None else f"{change:.1%}", "n/a" if cover is None else f"{cover:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(_in_words(r) for r in doc["rows"]), ""]
    if figure:
        lines += [f"![LiDAR-only vs fusion]({figure})", ""]
    return "\n".join(lines)


def _in_words(r: Mapping[str, Any]) -> str:
    """What the camera adds to one pair, measured both ways, in one sentence."""
    m = r["map"]
    gain = _delta(m["lidar"], m["fusion"])
    hidden = _delta(m.get("cameras_hidden"), m["fusion"])
    text = f"- {r['model']}: the fusion model scores {_f(gain, sign=True)} mAP against the LiDAR-only model"
    if hidden is not None:
        text += f"; its own cameras are worth {_f(hidden, sign=True)} mAP (with them vs hidden)"
    if r.get("heatmap_change") is not None:
        text += f", and hiding them changes its heatmaps by {r['heatmap_change']:.1%}"
    return text + "."


def write_figure(doc: Mapping[str, Any], path: Path) -> Path:
    """Bars per pair and class (and mAP): LiDAR-only, fusion, fusion with its cameras hidden."""
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, classes, thr = doc["rows"], doc["classes"], doc["thresholds"]
    groups = [("mAP", None)] + [(f"{c}\nAP@{thr[c]:g}", c) for c in classes]
    fig = Figure(figsize=(3.2 * max(1, len(rows)) + 1.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(rows)), squeeze=False)[0]
    kinds = (("lidar", "LiDAR-only", "#4c72b0"), ("fusion", "fusion", "#dd8452"))
    kinds += (("cameras_hidden", "fusion, cameras hidden", "#bbbbbb"),)
    x = np.arange(len(groups))
    values = [
        [[(r["map"] if c is None else r["ap"][c]).get(key) for _, c in groups] for key, _, _ in kinds]
        for r in rows
    ]
    top = max([v for per_row in values for per_kind in per_row for v in per_kind if v is not None] + [0.0])
    for ax, r, per_row in zip(axes, rows, values, strict=False):
        for k, ((_, label, colour), vals) in enumerate(zip(kinds, per_row, strict=True)):
            heights = [np.nan if v is None else v for v in vals]
            ax.bar(x + (k - 1) * 0.27, heights, 0.27, label=label, color=colour)
        ax.set_xticks(x, [g[0] for g in groups], fontsize=8)
        ax.set_ylim(0, max(0.05, min(1.0, 1.2 * top)))
        ax.set_title(r["model"], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("3D AP, LEVEL_2")
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle("LiDAR-only vs fusion, fleet test split", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def summary(report_dir: Path) -> str:
    """The comparison section of a finished fusion demo (from its fusion.json), for the terminal."""
    path = Path(report_dir) / "fusion.json"
    if not path.is_file():
        return ""
    return "\n" + comparison_markdown(json.loads(path.read_text()))
