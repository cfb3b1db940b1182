"""`drivetl finetune`: fine-tune a pretrained detector on a team's own rig with adapters (LightningCLI).

Usage: ``drivetl finetune --config configs/finetune/lora.yaml --model.pretrained CKPT --data.root FLEET_DIR
[--data.labeled_fraction 0.05] [--trainer.max_steps N] [--trainer.default_root_dir RUN]``.
Every option after ``--config`` is a LightningCLI option of the ``fit`` subcommand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Fine-tune a pretrained checkpoint on fleet data (a team-format folder) with adapters: LoRA, bottleneck, "
    "rig-conditioned FiLM, BatchNorm re-estimation, per-domain norms, or full fine-tuning. Options after "
    "--config are LightningCLI `fit` options: --model.pretrained CKPT, --data.root DIR, "
    "--data.labeled_fraction F, --trainer.max_steps N, --trainer.default_root_dir RUN, --print_config. "
    "Writes RUN/adapters.safetensors, RUN/finetuned.ckpt and RUN/finetune_summary.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a YAML file from configs/finetune/")
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
        raise ConfigError(f"{config}: config file not found (see configs/finetune/)")
    from drivetl.train.finetune import run_finetune

    run_finetune(["--config", str(config), *args.overrides])
    return 0
