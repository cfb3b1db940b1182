"""`drivetl pretrain`: pretrain LiDAR/camera encoders from a YAML config (LightningCLI underneath).

Usage: ``drivetl pretrain --config configs/pretrain/tiny_lidar.yaml [--data.root DIR]
[--trainer.max_steps N] [--trainer.devices 4 --trainer.strategy ddp] [--ckpt_path last]``.
Several ``--config`` files merge in order; every other option is a LightningCLI option of the ``fit``
subcommand.
"""

from __future__ import annotations

import argparse

from drivetl.commands._lightning import add_config_arguments, lightning_args

CONFIG_DIR = "configs/pretrain/"

DESCRIPTION = (
    "Pretrain LiDAR and camera encoders on Waymo-format data (or a team folder or training cache). "
    "Options after --config are LightningCLI `fit` options: --data.root DIR, --trainer.max_steps N, "
    "--trainer.devices/--trainer.num_nodes/--trainer.strategy ddp, --ckpt_path last (resume), "
    "--print_config."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl pretrain`."""
    add_config_arguments(parser, CONFIG_DIR)


def run(args: argparse.Namespace) -> int:
    """Run `drivetl pretrain`; returns the exit code."""
    from drivetl.train.cli import run_pretrain

    run_pretrain(lightning_args(args, CONFIG_DIR))
    return 0
