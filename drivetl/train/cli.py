"""`drivetl pretrain` and `drivetl finetune` on LightningCLI: class_path/init_args YAML (several
``--config`` files merge in order), overrides like ``--trainer.max_steps 10``.

Defaults added to whatever the config says (a config that names its own keeps them):
TensorBoard + CSV loggers under ``trainer.default_root_dir`` (the run folder), a Rich progress bar,
a `ModelCheckpoint` keeping the best and the last checkpoint in ``<run>/checkpoints``, a second one
refreshing ``last.ckpt`` every ``--checkpoint_every_n_steps`` training steps (default 500; 0: off), so
``--ckpt_path last`` resumes a killed run (and is refused when there is no checkpoint yet), the
random generators' states in every checkpoint (`RandomState`), checkpoints written under a temporary
name and renamed (`AtomicCheckpointIO`; a killed run's temporary files are deleted when the next
one starts), and bf16 mixed precision on a GPU that supports it when ``trainer.precision`` is left
unset; ``--cpu_threads N|auto`` sets torch's threads while training on the CPU. With the data
module's position in the training order (`drivetl.data.sampling`), a resumed run repeats the run
it continues (docs/finetune.md, "Stopping and resuming"). Pretraining selects by ``val/loss``;
fine-tuning by the module's selection metric (``val/ap`` max or ``val/entropy`` min).

Fine-tuning wires the model and its data explicitly here: the model's `batch_spec` (what the
pretrained encoders take) and its self-training flag are linked into the data module when both are
built, and the `FinetuneStart` callback hands the data module's target frames to the module's
BatchNorm re-estimation. After ``fit`` the selected (best) weights are exported into the run folder
(`export_run`): ``adapters.safetensors`` (`save_adapters`: adapter + trainable tensors and BatchNorm
statistics, with the metadata `build_adapted` needs), ``finetuned.ckpt`` (a full checkpoint
`load_finetuned` reads on its own) and ``finetune_summary.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.plugins.io import CheckpointIO

from drivetl._io import atomic_write_text
from drivetl.data.datamodule import DriveDataModule, FinetuneDataModule
from drivetl.errors import ConfigError, DrivetlError
from drivetl.models.adapters import save_adapters
from drivetl.train._resume import AtomicCheckpointIO, RandomState, remove_stale_checkpoint_partials
from drivetl.train.finetune import FinetuneModule
from drivetl.train.pretrain import PretrainModule

__all__ = [
    "ADAPTER_FILE",
    "CHECKPOINT_FILE",
    "SUMMARY_FILE",
    "DrivetlCLI",
    "FinetuneCLI",
    "FinetuneStart",
    "PretrainCLI",
    "StepCheckpoints",
    "export_run",
    "run_finetune",
    "run_pretrain",
    "step_checkpoint",
]

ADAPTER_FILE = "adapters.safetensors"
CHECKPOINT_FILE = "finetuned.ckpt"
SUMMARY_FILE = "finetune_summary.json"
LABELED_FILE = "labeled_frames.txt"


#: default of ``--checkpoint_every_n_steps``
CHECKPOINT_EVERY_N_STEPS = 500


def training_threads(workers: int, cores: int | None = None) -> int:
    """``--cpu_threads auto``: the cores this process may run on (`cores`, default its CPU affinity)
    less one per loader worker, at least one."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, int(cores) - max(0, int(workers)))


class DrivetlCLI(LightningCLI):
    """LightningCLI with drivetl's defaults: run folder, TensorBoard + CSV logs, Rich progress bar,
    best/last checkpoints on `monitor()`, bf16-mixed on a GPU that supports it."""

    #: run folder used when the config gives no ``trainer.default_root_dir``
    run_name = "run"

    def monitor(self) -> tuple[str, str]:
        """(metric, mode) the default ModelCheckpoint selects the best checkpoint by."""
        return "val/loss", "min"

    def extra_callbacks(self) -> list[Callback]:
        """Callbacks the run always gets, beside the config's."""
        return []

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--checkpoint_every_n_steps N``: also save ``last.ckpt`` every N training steps (0: off).
        ``--cpu_threads N|auto``: torch's intra-op threads while training on the CPU."""
        parser.add_argument(
            "--checkpoint_every_n_steps", type=int, default=CHECKPOINT_EVERY_N_STEPS,
            help="also save checkpoints/last.ckpt every N training steps, so a killed run loses at most "
            "N steps (0: only at validation)",
        )
        parser.add_argument(
            "--cpu_threads", type=int | str | None, default=None,
            help="torch's threads while training on the CPU (default: torch's, one per core; auto: "
            "the cores less one per loader worker, faster when the workers are busy all the time)",
        )

    def _every_n_steps(self) -> int:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        value = (config or {}).get("checkpoint_every_n_steps", CHECKPOINT_EVERY_N_STEPS)
        if value is None or int(value) < 0:
            raise ConfigError(f"--checkpoint_every_n_steps must be >= 0, got {value!r}")
        return int(value)

    def before_fit(self) -> None:
        """Delete the temporary checkpoint files a killed run left in the run and checkpoint folders;
        refuse ``--ckpt_path last`` when the run folder has no checkpoint yet (Lightning would start
        from scratch with a warning, which a resumed run must not do silently)."""
        self._cpu_threads()
        callbacks = self.trainer.checkpoint_callbacks
        folders = sorted({c.dirpath for c in callbacks if getattr(c, "dirpath", None)})
        steps = [c.dirpath for c in self.trainer.callbacks if isinstance(c, StepCheckpoints)]
        if self.trainer.is_global_zero:
            remove_stale_checkpoint_partials([self.trainer.default_root_dir, *folders, *steps])
        ckpt = (self.config.get("fit") or {}).get("ckpt_path") if "fit" in self.config else None
        if ckpt != "last":
            return
        if not any(Path(f, "last.ckpt").is_file() for f in folders):
            where = ", ".join(folders) or self.trainer.default_root_dir
            raise ConfigError(
                f"--ckpt_path last: no last.ckpt in {where} yet, so there is nothing to resume; start "
                "without --ckpt_path, or pass the checkpoint file to resume from"
            )

    def _cpu_threads(self) -> None:
        """Training on the CPU with ``--cpu_threads``: set torch's intra-op threads (`fit_cli` puts
        the previous count back when fit returns). Threads and busy loader workers that outnumber
        the cores wait on each other: on two cores with two workers, a pretraining step of the demo
        (Waymo frames decoded and objects pasted in the workers) took 0.697 s with two threads and
        0.393 s with one, while fine-tuning on small fleet frames took 0.276 s with two and 0.369 s
        with one (tools/bench_threads.py)."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        value = (config or {}).get("cpu_threads")
        if value is None:
            return
        if value == "auto":
            workers = getattr(getattr(self.datamodule, "hparams", None), "num_workers", 0) or 0
            value = training_threads(workers)
        elif isinstance(value, str) or int(value) < 1:
            raise ConfigError(f"--cpu_threads must be a number >= 1 or auto, got {value!r}")
        if isinstance(self.trainer.accelerator, CPUAccelerator):
            torch.set_num_threads(int(value))

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        callbacks.extend(self.extra_callbacks())
        root = config.get("default_root_dir") or os.path.join("runs", self.run_name)
        config["default_root_dir"] = root
        if not any(isinstance(c, RandomState) for c in list(config.get("callbacks") or []) + callbacks):
            callbacks.append(RandomState())
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        if config.get("logger") in (None, True):
            config["logger"] = [TensorBoardLogger(root, name="tb"), CSVLogger(root, name="csv")]
        given = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, RichProgressBar) for c in given
        ):
            callbacks.append(RichProgressBar())
        ckpts = [c for c in given if isinstance(c, ModelCheckpoint)]
        if not ckpts and config.get("enable_checkpointing", True) is not False:
            metric, mode = self.monitor()
            callbacks.append(
                ModelCheckpoint(
                    monitor=metric, mode=mode, save_top_k=1, save_last=True, filename="best-{step}"
                )
            )
            ckpts = callbacks[-1:]
            every = self._every_n_steps()
            if every:
                callbacks.append(
                    ModelCheckpoint(every_n_train_steps=every, save_top_k=0, save_last=True, monitor=None)
                )
                ckpts = callbacks[-2:]
        for c in ckpts:
            if c.dirpath is None:
                c.dirpath = os.path.realpath(os.path.join(root, "checkpoints"))
        if config.get("precision") is None:
            gpu = torch.cuda.is_available() and config.get("accelerator") in (None, "auto", "gpu", "cuda")
            config["precision"] = "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
        return super()._instantiate_trainer(config, callbacks)


def fit_cli(
    cli_class: type[DrivetlCLI], model_class: type, data_class: type, args: Sequence[str]
) -> DrivetlCLI:
    """Run ``fit`` through `cli_class` with LightningCLI arguments (``--config``, ``--model.*``, ...):
    model and data classes as the base classes of ``class_path``, the config saved beside the run,
    no environment variables read, optimizers from the module. A `DrivetlError` raised while the
    classes are built (jsonargparse wraps it) is raised as itself."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    # the data modules resume their training order themselves (`state_dict`, drivetl.data.sampling):
    # Lightning's warning that the loaders cannot resume part-way through an epoch does not apply
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    threads = torch.get_num_threads()
    try:
        return cli_class(
            model_class,
            data_class,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=["fit", *args],
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"fit": {"default_env": False}},
            auto_configure_optimizers=False,
        )
    except Exception as exc:
        cause = _drivetl_cause(exc)
        if cause is not None and cause is not exc:
            raise cause from None
        raise
    finally:
        torch.set_num_threads(threads)


def _drivetl_cause(exc: BaseException) -> DrivetlError | None:
    """The DrivetlError somewhere in `exc`'s cause/context chain (jsonargparse wraps init errors)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DrivetlError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class PretrainCLI(DrivetlCLI):
    """`drivetl pretrain`: best checkpoint by validation loss, runs under ``runs/pretrain``."""

    run_name = "pretrain"


def run_pretrain(args: Sequence[str]) -> None:
    """Run ``fit`` with LightningCLI arguments, e.g. ``["--config", "configs/pretrain/tiny_lidar.yaml"]``."""
    fit_cli(PretrainCLI, PretrainModule, DriveDataModule, args)


class FinetuneStart(Callback):
    """At the start of fine-tuning: hands the data module's target frames to the module.

    Writes ``<run>/labeled_frames.txt`` (rank 0), prints the frame counts, and, when the module
    re-estimates BatchNorm statistics, runs it on the data module's `norm_dataloader`; then, when it
    recalibrates its size priors, runs that on the `calibration_dataloader` (the labeled frames).
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """See the class docstring."""
        dm = trainer.datamodule
        frames = getattr(dm, "frames", None)
        if frames is not None:
            if trainer.is_global_zero:
                atomic_write_text(Path(trainer.default_root_dir) / LABELED_FILE, frames.labeled_list())
            print("fine-tune frames: " + ", ".join(f"{k} {v}" for k, v in frames.counts.items()))
        if pl_module.do_reestimate and not pl_module.norms_reestimated:
            if not isinstance(dm, FinetuneDataModule):
                raise ConfigError("reestimate_norms needs the fine-tune data module (FinetuneDataModule)")
            pl_module.reestimate_norms(dm.norm_dataloader())
        if getattr(pl_module.hparams, "recalibrate_sizes", False) and pl_module.size_bias is None:
            if not isinstance(dm, FinetuneDataModule):
                raise ConfigError("recalibrate_sizes needs the fine-tune data module (FinetuneDataModule)")
            pl_module.recalibrate_sizes(dm.calibration_dataloader())
        if getattr(pl_module.hparams, "start_candidate", False) and trainer.ckpt_path is None:
            pl_module.remember_start()


def step_checkpoint(dirpath: str | Path, step: int) -> Path:
    """The file `StepCheckpoints` writes for training step `step` in `dirpath`."""
    return Path(dirpath) / f"step_{int(step):06d}.ckpt"


class StepCheckpoints(Callback):
    """Saves the weights at the listed training steps, ``<dirpath>/step_<N>.ckpt`` (`step_checkpoint`),
    so one run gives the model at several points of its training (a learning curve).

    steps: optimizer steps after which to save; 0 saves the model before its first update. The files
    are the run's own checkpoints, weights only, with the drivetl metadata (`drivetl evaluate` and
    `load_finetuned` read them), written under a temporary name and renamed. A step the run does not
    reach writes nothing. In YAML: ``trainer.callbacks: [{class_path:
    drivetl.train.cli.StepCheckpoints, init_args: {steps: [0, 50, 100], dirpath: RUN/steps}}]``.
    """

    def __init__(self, steps: Sequence[int], dirpath: str):
        super().__init__()
        bad = [s for s in steps if int(s) != s or s < 0]
        if bad or not steps:
            raise ConfigError(f"StepCheckpoints: steps must be integers >= 0, got {list(steps)[:10]}")
        self.steps = frozenset(int(s) for s in steps)
        self.dirpath = Path(dirpath)
        self._saved: set[int] = set()

    def _save(self, trainer: Trainer, step: int) -> None:
        if step not in self.steps or step in self._saved:
            return
        path = step_checkpoint(self.dirpath, step)
        tmp = path.with_name(f".{path.name}.partial")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=True)
        if trainer.is_global_zero:
            os.replace(tmp, path)
        self._saved.add(step)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Step 0: the weights before the first update (after `FinetuneStart`'s norm re-estimation)."""
        self._save(trainer, int(trainer.global_step))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        """After each optimizer step: save when the step is listed."""
        self._save(trainer, int(trainer.global_step))


class FinetuneCLI(DrivetlCLI):
    """`drivetl finetune`: the model's batch spec and self-training flag linked into the data module,
    `FinetuneStart`, best checkpoint by the module's selection metric."""

    run_name = "finetune"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link what the model takes into the data module, once both are built."""
        super().add_arguments_to_parser(parser)
        parser.link_arguments("model.batch_spec", "data.init_args.model_spec", apply_on="instantiate")
        parser.link_arguments("model.uses_unlabeled", "data.init_args.unlabeled", apply_on="instantiate")

    def extra_callbacks(self) -> list[Callback]:
        """`FinetuneStart`."""
        return [FinetuneStart()]

    def monitor(self) -> tuple[str, str]:
        """The fine-tune module's selection metric."""
        return self.model.monitor


def _start_if_better(trainer: Trainer, module: FinetuneModule, best: str, score: Any) -> tuple[str, Any]:
    """Validate the start weights (`FinetuneModule.start_candidate`) and keep them in `module` when they
    beat the selected checkpoint's score; returns the (checkpoint, score) selected."""
    start = getattr(module, "start_state", None)
    if start is None or score is None or trainer.datamodule is None:
        return best, score
    metric, mode = module.monitor
    chosen = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.load_state_dict(start)
    results = trainer.validate(module, datamodule=trainer.datamodule, verbose=False)
    value = float(results[0].get(metric, math.nan)) if results else math.nan
    reference = float(score)
    if not math.isnan(value) and (value > reference if mode == "max" else value < reference):
        print(f"fine-tune: the start weights score {metric} {value:.4f}, better than {reference:.4f}: kept")
        return "start", value
    module.load_state_dict(chosen)
    print(f"fine-tune: the start weights score {metric} {value:.4f}, the selected checkpoint {reference:.4f}")
    return best, score


def export_run(trainer: Trainer, module: FinetuneModule) -> dict[str, Any]:
    """Load the selected checkpoint's weights into `module` and write the run's exports (see module doc).

    Every rank must call it (saving a Lightning checkpoint synchronizes); only rank 0 writes files.
    Returns the summary dict.
    """
    run = Path(trainer.default_root_dir)
    cb = trainer.checkpoint_callback
    best = getattr(cb, "best_model_path", "") or ""
    score = getattr(cb, "best_model_score", None)
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    best, score = _start_if_better(trainer, module, best, score)
    tmp = run / f".{CHECKPOINT_FILE}.partial"
    trainer.save_checkpoint(tmp, weights_only=True)
    summary: dict[str, Any] = {}
    if trainer.is_global_zero:
        os.replace(tmp, run / CHECKPOINT_FILE)
        header = save_adapters(module.model, run / ADAPTER_FILE, module.adapter_metadata())
        metric, mode = module.monitor
        summary = {
            "method": module.hparams.method,
            "freeze": module.hparams.freeze,
            "trainable": header["trainable"],
            "total": header["total"],
            "trainable_share": header["trainable"] / max(header["total"], 1),
            "selection": {
                "metric": metric,
                "mode": mode,
                "best_score": None if score is None else float(score),
                "best_checkpoint": best or None,
            },
            "adapter_file": str(run / ADAPTER_FILE),
            "adapter_bytes": (run / ADAPTER_FILE).stat().st_size,
            "checkpoint": str(run / CHECKPOINT_FILE),
            "pretrained": str(module.hparams.pretrained),
            "steps": int(trainer.global_step),
        }
        counts = getattr(trainer.datamodule, "counts", None)
        if counts:
            summary["frames"] = dict(counts)
        atomic_write_text(run / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        print(
            f"fine-tune: adapters -> {run / ADAPTER_FILE} ({summary['adapter_bytes']:,} bytes), "
            f"checkpoint -> {run / CHECKPOINT_FILE}"
        )
    return summary


def run_finetune(args: Sequence[str]) -> dict[str, Any]:
    """``drivetl finetune`` without the shell: ``fit`` then `export_run`, with LightningCLI arguments,
    e.g. ``["--config", "configs/finetune/base.yaml", "--config", "configs/finetune/lora.yaml",
    "--model.pretrained", ckpt, "--data.root", fleet]``. Returns the run summary
    (`finetune_summary.json`: file paths, trainable share, selection score; empty on ranks other
    than 0)."""
    cli = fit_cli(FinetuneCLI, FinetuneModule, FinetuneDataModule, args)
    return export_run(cli.trainer, cli.model)
