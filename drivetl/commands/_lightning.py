"""Shared argument handling of the LightningCLI-backed commands (`pretrain`, `finetune`).

The command itself takes ``--config`` (repeatable: several files merge in order, a later one
overriding what an earlier one set, as jsonargparse does); every other option is handed to
LightningCLI's ``fit`` unchanged (``--data.root DIR``, ``--trainer.max_steps N``,
``--ckpt_path last``, ...), after the configs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_arguments(parser: argparse.ArgumentParser, config_dir: str) -> None:
    """``--config`` (required, repeatable), and pass every unknown option through as ``args.overrides``."""
    parser.add_argument(
        "--config",
        required=True,
        action="append",
        help=f"a YAML file from {config_dir}; repeat to merge several in order (a base, then what differs)",
    )
    parser.set_defaults(overrides=[])
    plain = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = plain(args, namespace)
        ns.overrides = list(ns.overrides) + list(extras)
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def lightning_args(args: argparse.Namespace, config_dir: str) -> list[str]:
    """``["--config", C1, "--config", C2, ..., *overrides]``.

    ConfigError naming a config file that does not exist, and naming the first config when it is
    one that only states what differs from a base (it names no ``model.class_path``): alone, it
    would silently run with the classes' defaults instead of the base's values.
    """
    from drivetl._io import read_yaml
    from drivetl.errors import ConfigError

    out: list[str] = []
    for name in args.config:
        config = Path(name)
        if not config.is_file():
            raise ConfigError(f"{config}: config file not found (see {config_dir})")
        out += ["--config", str(config)]
    first = Path(args.config[0])
    doc = read_yaml(first.read_text(), str(first), ConfigError)
    model = doc.get("model") if isinstance(doc, dict) else None
    if not (isinstance(model, dict) and model.get("class_path")):
        raise ConfigError(
            f"{first}: names no model.class_path, so it only states what differs from a base config; "
            f"put the config it extends first (--config BASE.yaml --config {first}; the shipped "
            "fine-tune configs extend configs/finetune/base.yaml)"
        )
    return [*out, *args.overrides]
