"""Shared argument handling of the LightningCLI-backed commands (`pretrain`, `finetune`).

The command itself takes ``--config``; every other option is handed to LightningCLI's ``fit``
unchanged (``--data.root DIR``, ``--trainer.max_steps N``, ``--ckpt_path last``, ...).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_arguments(parser: argparse.ArgumentParser, config_dir: str) -> None:
    """``--config`` (required), and pass every unknown option through as ``args.overrides``."""
    parser.add_argument("--config", required=True, help=f"a YAML file from {config_dir}")
    parser.set_defaults(overrides=[])
    plain = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = plain(args, namespace)
        ns.overrides = list(ns.overrides) + list(extras)
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def lightning_args(args: argparse.Namespace, config_dir: str) -> list[str]:
    """``["--config", CONFIG, *overrides]``; ConfigError when the config file does not exist."""
    from drivetl.errors import ConfigError

    config = Path(args.config)
    if not config.is_file():
        raise ConfigError(f"{config}: config file not found (see {config_dir})")
    return ["--config", str(config), *args.overrides]
