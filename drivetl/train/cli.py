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

__all__ = ["PretrainCLI", "run_pretrain"]


class PretrainCLI(LightningCLI):
    """LightningCLI with drivetl's logging/checkpoint/precision defaults."""

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        root = config.get("default_root_dir") or os.path.join("runs", "pretrain")
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
            callbacks.append(
                ModelCheckpoint(
                    monitor="val/loss", mode="min", save_top_k=1, save_last=True, filename="best-{step}"
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


def run_pretrain(args: Sequence[str]) -> None:
    """Run ``fit`` with LightningCLI arguments, e.g. ``["--config", "configs/pretrain/tiny_lidar.yaml"]``."""
    import warnings

    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    PretrainCLI(
        PretrainModule,
        DriveDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["fit", *args],
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"fit": {"default_env": False}},
        auto_configure_optimizers=False,
    )
