"""Rig-conditioned FiLM: per-channel scale and shift of a feature map, computed from a rig vector.

``y = x * (1 + gamma(c)) + beta(c)``, where c is the (B, D) rig descriptor of `RigEmbedding` and
gamma, beta are (B, C) outputs of a small MLP whose last layer starts at zero (identity at init).
One set of FiLM weights serves every rig: the rig enters only through c.

`insert_film` wraps named stages like `insert_adapters` does. The condition reaches the wrapped
stages through `film_condition`, a context manager around the forward pass::

    with film_condition(model, rig_embedding(batch_rigs)):
        outputs = model(batch)

The condition is set for the duration of the `with` block only, so nothing outlives a forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ._bottleneck import StageWrapper, _channels_for
from ._keys import get_module, match_modules, set_module


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
        self.condition: torch.Tensor | None = None

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = self._stage_output(*args, **kwargs)
        if self.condition is None:
            raise RuntimeError(
                f"FiLM stage {self.stage_name!r} has no rig condition; run the model inside "
                "`with film_condition(model, rig_vectors):`"
            )
        return self.film(out, self.condition)


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
def film_condition(model: nn.Module, cond: torch.Tensor) -> Iterator[None]:
    """Give every FiLM stage of `model` the rig vectors `cond` ((B, D) or (D,)) inside the block."""
    stages = [m for m in model.modules() if isinstance(m, StageWithFiLM)]
    for m in stages:
        m.condition = cond
    try:
        yield
    finally:
        for m in stages:
            m.condition = None
