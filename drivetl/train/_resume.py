"""What a resumed training run needs beyond Lightning's own checkpoint: the random generators' states,
and checkpoint files that are never half-written.

Lightning saves the weights, the optimizer and schedule, the loops' progress and every callback's and
the data module's ``state_dict`` (the data module's holds the position in the training order, see
`drivetl.data.sampling`). It does not save the random generators, which the model draws from
(masked-occupancy masks, camera dropout, LoRA dropout): `RandomState` does. `AtomicCheckpointIO`
writes every checkpoint under a temporary name and renames it, so a run killed while saving keeps its
previous ``last.ckpt`` intact; `remove_stale_checkpoint_partials` deletes what such a run left behind.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.plugins.io import TorchCheckpointIO

from drivetl._io import atomic_write, remove_stale_partials

__all__ = [
    "AtomicCheckpointIO",
    "RandomState",
    "random_state",
    "remove_stale_checkpoint_partials",
    "set_random_state",
]


def random_state() -> dict[str, Any]:
    """The states of torch's CPU and CUDA generators, numpy's global one and Python's `random`, as
    tensors and plain values (a checkpoint holding them loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what `random_state` returned (the CUDA part only where as many devices are visible)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_tuples(state["python"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (Python's random state is nested tuples of ints)."""
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class RandomState(Callback):
    """Saves the random generators' states in every checkpoint (`random_state`) and restores them
    when the run resumes, just before its first training batch.

    The state saved is the one at the moment of saving: after the step's update, or after the
    validation that ran at that step. It is restored at the first training batch of the resumed run,
    so whatever the resumed run does before (sanity validation, starting loader workers, BatchNorm
    re-estimation) cannot shift it; the training step that follows draws what the uninterrupted run
    drew. With several processes (DDP) the checkpoint holds rank 0's generators, and every rank
    restores those.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """The generators' states now."""
        return random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the checkpoint's states until the first training batch."""
        self._pending = dict(state_dict) if state_dict else None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Restore the loaded states, once."""
        if self._pending is not None:
            set_random_state(self._pending)
            self._pending = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` writing a local checkpoint to a temporary name (``.NAME.*.partial``)
    renamed over the target once complete; remote paths are written as Lightning does."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Save `checkpoint` to `path` atomically."""
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        fs = get_filesystem(path)
        fs.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)


def remove_stale_checkpoint_partials(folders: Iterable[str | os.PathLike]) -> int:
    """Delete the temporary checkpoint files (``.NAME.*.partial``) a killed run left directly in
    `folders` (the run folder, its checkpoint folders); returns how many."""
    removed = 0
    for folder in {Path(f).resolve() for f in folders}:
        removed += remove_stale_partials(folder, recursive=False)
    return removed
