"""`drivetl pretrain`: pretrain LiDAR/camera encoders from a YAML config (LightningCLI underneath).

Usage: ``drivetl pretrain --config configs/pretrain/tiny_lidar.yaml [--data.root DIR]
[--trainer.max_steps N] [--trainer.devices 4 --trainer.strategy ddp] [--ckpt_path last]``.
Every option after ``--config`` is a LightningCLI option of the ``fit`` subcommand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Pretrain LiDAR and camera encoders on Waymo-format data (or a team folder or training cache). "
    "Options after --config are LightningCLI `fit` options: --data.root DIR, --trainer.max_steps N, "
    "--trainer.devices/--trainer.num_nodes/--trainer.strategy ddp, --ckpt_path last (resume), "
    "--print_config."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a YAML file from configs/pretrain/")
    parser.set_defaults(overrides=[])
    plain = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        # every option this parser does not know is handed to LightningCLI unchanged
        ns, extras = plain(args, namespace)
        ns.overrides = list(ns.overrides) + list(extras)
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from drivetl.errors import ConfigError

    config = Path(args.config)
    if not config.is_file():
        raise ConfigError(f"{config}: config file not found (see configs/pretrain/)")
    from drivetl.train.cli import run_pretrain

    run_pretrain(["--config", str(config), *args.overrides])
    return 0
