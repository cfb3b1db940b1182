"""`drivetl finetune`: fine-tune a pretrained detector on a team's own rig with adapters (LightningCLI).

Usage: ``drivetl finetune --config configs/finetune/base.yaml --config configs/finetune/lora.yaml
--model.pretrained CKPT --data.root FLEET_DIR [--data.labeled_fraction 0.05] [--trainer.max_steps N]
[--trainer.default_root_dir RUN]``. Several ``--config`` files merge in order (the shipped ones: the
base, then a method's file). Every other option is a LightningCLI option of the ``fit`` subcommand.
"""

from __future__ import annotations

import argparse

from drivetl.commands._lightning import add_config_arguments, lightning_args

CONFIG_DIR = "configs/finetune/"

DESCRIPTION = (
    "Fine-tune a pretrained checkpoint on fleet data (a team-format folder) with adapters: LoRA, bottleneck, "
    "rig-conditioned FiLM, BatchNorm re-estimation, per-domain norms, or full fine-tuning. Several --config "
    "files merge in order (configs/finetune/base.yaml, then a method's file). The other options are "
    "LightningCLI `fit` options: --model.pretrained CKPT, --data.root DIR, "
    "--data.labeled_fraction F, --trainer.max_steps N, --trainer.default_root_dir RUN, --print_config. "
    "Writes RUN/adapters.safetensors, RUN/finetuned.ckpt and RUN/finetune_summary.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `drivetl finetune`."""
    add_config_arguments(parser, CONFIG_DIR)


def run(args: argparse.Namespace) -> int:
    """Run `drivetl finetune`; returns the exit code."""
    from drivetl.train.cli import run_finetune

    run_finetune(lightning_args(args, CONFIG_DIR))
    return 0
