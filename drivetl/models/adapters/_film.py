"""Rig-conditioned FiLM: per-channel scale and shift of a feature map, computed from a rig vector.

``y = x * (1 + gamma(c)) + beta(c)``, where c is the (B, D) rig vector (`drivetl.calib.rig_vector`,
one row per frame) and gamma, beta are (B, C) outputs of a small MLP whose last layer starts at
zero (identity at init). One set of FiLM weights serves every rig: the rig enters only through c.

`insert_film` wraps named stages like `insert_adapters` does. The condition reaches the wrapped
stages through `film_condition`, a context manager around the forward pass; a detector's adapted
forward (`AdaptedDetector`, `adapted_forward`) opens it with the batch's own rig vectors::

    with film_condition(batch.rig_vectors):
        outputs = model(batch)

The condition is a context variable of the call, not an attribute of any module: it exists for the
duration of the `with` block only, and nothing is stored on the model.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from drivetl.calib.rig_vector import RIG_FIELDS, RIG_VECTOR_DIM, describe_rig, rig_vector
from drivetl.models._keys import get_module, match_modules, set_module

from ._bottleneck import StageWrapper, _channels_for

#: the rig vectors of the forward pass in progress (set by `film_condition`)
_CONDITION: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar(
    "drivetl_film_condition", default=None
)


class FiLM(nn.Module):
    """FiLM layer. forward(x (B, C, *spatial), cond (B, D) or (D,)) -> (B, C, *spatial)."""

    def __init__(self, cond_dim: int, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.cond_dim = int(cond_dim)
        self.channels = int(channels)
        self.hidden = int(hidden)
        self.mlp = nn.Sequential(nn.Linear(cond_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def scale_shift(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta), each (B, C)."""
        if cond.ndim == 1:
            cond = cond.unsqueeze(0)
        gamma, beta = self.mlp(cond).chunk(2, dim=-1)
        return 1.0 + gamma, beta

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"FiLM expects (B, {self.channels}, ...) features, got {tuple(x.shape)}")
        if cond.shape[-1] != self.cond_dim:
            raise ValueError(f"FiLM expects a rig vector of length {self.cond_dim}, got {tuple(cond.shape)}")
        scale, shift = self.scale_shift(cond.to(dtype=x.dtype, device=x.device))
        if scale.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"FiLM got {scale.shape[0]} rig vectors for a batch of {x.shape[0]}")
        view = (scale.shape[0], self.channels) + (1,) * (x.ndim - 2)
        return x * scale.view(view) + shift.view(view)


class StageWithFiLM(StageWrapper):
    """A pretrained stage whose output is modulated by `FiLM` with the condition of `film_condition`."""

    def __init__(self, stage: nn.Module, film: FiLM, name: str = "") -> None:
        super().__init__(stage, name)
        self.film = film

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = self._stage_output(*args, **kwargs)
        condition = _CONDITION.get()
        if condition is None:
            raise RuntimeError(
                f"FiLM stage {self.stage_name!r} has no rig condition; run the model through its "
                "adapted forward (AdaptedDetector) or inside `with film_condition(rig_vectors):`"
            )
        return self.film(out, condition)

    def recipe_entry(self) -> dict[str, Any]:
        """What `from_recipe` needs to wrap the stage again (the adapter file's recipe entry)."""
        return {"cond_dim": self.film.cond_dim, "channels": self.film.channels, "hidden": self.film.hidden}

    @staticmethod
    def from_recipe(target: nn.Module, entry: Mapping[str, Any], name: str) -> nn.Module:
        """`target` followed by a fresh FiLM layer of the recipe entry's size."""
        return StageWithFiLM(target, FiLM(entry["cond_dim"], entry["channels"], entry["hidden"]), name)


def insert_film(
    model: nn.Module,
    after: Sequence[str],
    cond_dim: int,
    *,
    hidden: int = 64,
    channels: int | dict[str, int] | None = None,
) -> list[str]:
    """Put a rig-conditioned `FiLM` after each stage named by `after` (names/globs/``re:``), in place.

    cond_dim: length of the rig vector (`RigEmbedding.dim`). channels: as in `insert_adapters`.
    Returns the wrapped stage names.
    """
    names = match_modules(model, after, what="FiLM stage")
    for name in names:
        stage = get_module(model, name)
        film = FiLM(cond_dim, _channels_for(channels, name, stage), hidden=hidden)
        ref = next(stage.parameters(), None)
        if ref is not None:
            film.to(device=ref.device, dtype=ref.dtype)
        set_module(model, name, StageWithFiLM(stage, film, name))
    return names


@contextlib.contextmanager
def film_condition(cond: torch.Tensor) -> Iterator[None]:
    """Condition every FiLM stage run inside the block on the rig vectors `cond` ((B, D) or (D,))."""
    token = _CONDITION.set(cond)
    try:
        yield
    finally:
        _CONDITION.reset(token)


class RigEmbedding(nn.Module):
    """Rig(s) -> rig vectors (`drivetl.calib.rig_vector`), float32 (B, `dim`) on the module's device.

    No parameters. lidar / camera: which LiDAR and camera describe the rig (default: ``TOP`` or the
    one with most beams; ``FRONT`` or the first camera).
    """

    dim = RIG_VECTOR_DIM
    fields = RIG_FIELDS

    def __init__(self, lidar: str | None = None, camera: str | None = None) -> None:
        super().__init__()
        self.lidar = lidar
        self.camera = camera
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def describe(self, rig) -> dict[str, float]:
        """Physical values of each field (for logs and reports)."""
        return describe_rig(rig, self.lidar, self.camera)

    def forward(self, rigs) -> torch.Tensor:
        """(B, `dim`) float32 for a `SensorRig` or a sequence of them."""
        if not isinstance(rigs, (list, tuple)):
            rigs = [rigs]
        rows = [rig_vector(r, self.lidar, self.camera) for r in rigs]
        return torch.from_numpy(np.stack(rows)).to(self._device_probe.device)
