"""`drivetl pretrain` on LightningCLI: class_path/init_args YAML, overrides like ``--trainer.max_steps 10``.

Defaults added to whatever the config says (a config that names its own keeps them):
TensorBoard + CSV loggers under ``trainer.default_root_dir``, a Rich progress bar, a
`ModelCheckpoint` keeping the best (lowest ``val/loss``) and the last checkpoint in
``<default_root_dir>/checkpoints`` (so ``--ckpt_path last`` resumes a killed run), and bf16 mixed
precision on a GPU that supports it when ``trainer.precision`` is left unset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from drivetl.data.datamodule import DriveDataModule
from drivetl.train.pretrain import PretrainModule

__all__ = ["DrivetlCLI", "PretrainCLI", "run_pretrain"]


class DrivetlCLI(LightningCLI):
    """LightningCLI with drivetl's defaults: run folder, TensorBoard + CSV logs, Rich progress bar,
    best/last checkpoints on `monitor()`, bf16-mixed on a GPU that supports it."""

    #: run folder used when the config gives no ``trainer.default_root_dir``
    run_name = "run"

    def monitor(self) -> tuple[str, str]:
        """(metric, mode) the default ModelCheckpoint selects the best checkpoint by."""
        return "val/loss", "min"

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        root = config.get("default_root_dir") or os.path.join("runs", self.run_name)
        config["default_root_dir"] = root
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
    no environment variables read, optimizers from the module."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
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


class PretrainCLI(DrivetlCLI):
    """`drivetl pretrain`: best checkpoint by validation loss, runs under ``runs/pretrain``."""

    run_name = "pretrain"


def run_pretrain(args: Sequence[str]) -> None:
    """Run ``fit`` with LightningCLI arguments, e.g. ``["--config", "configs/pretrain/tiny_lidar.yaml"]``."""
    fit_cli(PretrainCLI, PretrainModule, DriveDataModule, args)
