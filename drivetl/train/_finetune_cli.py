"""`drivetl finetune` on LightningCLI, and the export at the end of a run.

Defaults added to whatever the config says (a config that names its own keeps them): TensorBoard +
CSV loggers under ``trainer.default_root_dir`` (the run folder), a Rich progress bar, a
`ModelCheckpoint` on the module's selection metric (``val/ap`` max or ``val/entropy`` min) keeping
the best and the last checkpoint in ``<run>/checkpoints``, bf16 on a GPU that supports it.

After ``fit`` the selected (best) weights are exported into the run folder:
``adapters.safetensors`` (`save_adapters`: adapter + trainable tensors and BatchNorm statistics,
with the metadata `build_adapted` needs), ``finetuned.ckpt`` (a full checkpoint `load_finetuned`
reads on its own) and ``finetune_summary.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Trainer

from drivetl._io import atomic_write_text
from drivetl.errors import DrivetlError
from drivetl.models.adapters import save_adapters
from drivetl.train._finetune_data import FinetuneDataModule
from drivetl.train.cli import DrivetlCLI, fit_cli
from drivetl.train.finetune import FinetuneModule

__all__ = ["FinetuneCLI", "export_run", "run_finetune"]

ADAPTER_FILE = "adapters.safetensors"
CHECKPOINT_FILE = "finetuned.ckpt"
SUMMARY_FILE = "finetune_summary.json"


class FinetuneCLI(DrivetlCLI):
    """`drivetl finetune`: best checkpoint by the fine-tune module's selection metric."""

    run_name = "finetune"

    def monitor(self) -> tuple[str, str]:
        return self.model.monitor


def _drivetl_cause(exc: BaseException) -> DrivetlError | None:
    """The DrivetlError somewhere in `exc`'s cause/context chain (jsonargparse wraps init errors)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DrivetlError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


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
        dm = getattr(trainer, "datamodule", None)
        if getattr(dm, "counts", None):
            summary["frames"] = dict(dm.counts)
        atomic_write_text(run / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        print(
            f"fine-tune: adapters -> {run / ADAPTER_FILE} ({summary['adapter_bytes']:,} bytes), "
            f"checkpoint -> {run / CHECKPOINT_FILE}"
        )
    return summary


def run_finetune(args: Sequence[str]) -> dict[str, Any]:
    """Run ``fit`` then `export_run`, with LightningCLI arguments, e.g.
    ``["--config", "configs/finetune/lora.yaml", "--model.pretrained", ckpt, "--data.root", fleet]``.
    Returns the summary (empty on ranks other than 0)."""
    try:
        cli = fit_cli(FinetuneCLI, FinetuneModule, FinetuneDataModule, args)
    except Exception as exc:
        cause = _drivetl_cause(exc)
        if cause is not None and cause is not exc:
            raise cause from None
        raise
    return export_run(cli.trainer, cli.model)
