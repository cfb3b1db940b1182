"""Bottleneck residual adapters placed after named stages of a backbone.

``y = x + up(act(down(x)))`` over the channel axis (dim 1) of a feature map: BEV maps
(B, C, H, W), sequences (B, C, L), volumes (B, C, D, H, W) or vectors (B, C). `up` starts at zero,
so the adapted model starts as the pretrained one.

`insert_adapters` replaces each named stage with a `StageWithAdapter` whose child ``stage`` is the
original module; state-dict keys of the stage's pretrained tensors gain the ``stage.`` level in
the adapted model, which `base_key` removes again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from drivetl.errors import ConfigError
from drivetl.models._keys import DROP, KeyRouted, get_module, match_modules, set_module


class BottleneckAdapter(nn.Module):
    """Residual bottleneck over channels: (B, C, *spatial) -> (B, C, *spatial), same dtype."""

    def __init__(self, channels: int, hidden: int | None = None, reduction: int = 4) -> None:
        super().__init__()
        hidden = int(hidden or max(1, channels // reduction))
        self.channels = int(channels)
        self.hidden = hidden
        self.down = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"bottleneck adapter expects (B, {self.channels}, ...) features, got {tuple(x.shape)}"
            )
        h = x.movedim(1, -1)
        return x + self.up(self.act(self.down(h))).movedim(-1, 1)


class StageWrapper(KeyRouted, nn.Module):
    """Base of modules that run a pretrained `stage` and then transform its tensor output."""

    def __init__(self, stage: nn.Module, name: str = "") -> None:
        super().__init__()
        self.stage = stage
        self.stage_name = name

    def route_key(self, rest: Sequence[str]) -> tuple[str, int]:
        """The wrapped stage's tensors keep their base keys (without the ``stage.`` level)."""
        return ("skip", 1) if rest[0] == "stage" else DROP

    def _stage_output(self, *args, **kwargs) -> torch.Tensor:
        out = self.stage(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"stage {self.stage_name or type(self.stage).__name__} returns {type(out).__name__}, "
                "not a tensor; put the adapter after a submodule that returns a (B, C, ...) tensor"
            )
        return out


class StageWithAdapter(StageWrapper):
    """A pretrained stage followed by a `BottleneckAdapter` on its output."""

    def __init__(self, stage: nn.Module, adapter: BottleneckAdapter, name: str = "") -> None:
        super().__init__(stage, name)
        self.adapter = adapter

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """The stage's output plus the adapter's residual update."""
        return self.adapter(self._stage_output(*args, **kwargs))

    def recipe_entry(self) -> dict[str, Any]:
        """What `from_recipe` needs to wrap the stage again (the adapter file's recipe entry)."""
        return {"channels": self.adapter.channels, "hidden": self.adapter.hidden}

    @staticmethod
    def from_recipe(target: nn.Module, entry: Mapping[str, Any], name: str) -> nn.Module:
        """`target` followed by a fresh adapter of the recipe entry's size."""
        return StageWithAdapter(target, BottleneckAdapter(entry["channels"], hidden=entry["hidden"]), name)


def infer_out_channels(module: nn.Module, where: str) -> int:
    """Output channels of a stage: those of its last Conv/Linear/BatchNorm/GroupNorm/LayerNorm."""
    found: int | None = None
    for mod in module.modules():
        for attr in ("out_channels", "out_features", "num_features", "num_channels"):
            value = getattr(mod, attr, None)
            if isinstance(value, int):
                found = value
                break
        if isinstance(mod, nn.LayerNorm):
            found = int(mod.normalized_shape[-1])
    if found is None:
        raise ConfigError(
            f"cannot tell the output channels of stage {where!r}; pass channels={{...}} explicitly"
        )
    return found


def _channels_for(channels: int | dict[str, int] | None, name: str, stage: nn.Module) -> int:
    if isinstance(channels, int):
        return channels
    if isinstance(channels, dict) and name in channels:
        return int(channels[name])
    return infer_out_channels(stage, name)


def insert_adapters(
    model: nn.Module,
    after: Sequence[str],
    *,
    reduction: int = 4,
    hidden: int | None = None,
    channels: int | dict[str, int] | None = None,
) -> list[str]:
    """Put a `BottleneckAdapter` after each stage of `model` named by `after`, in place.

    after: module names or globs (``"re:..."`` for a regex) of stages whose output is a
        (B, C, ...) tensor. Each is replaced by a `StageWithAdapter` under the same name.
    reduction / hidden: bottleneck width = hidden or C // reduction.
    channels: C for every stage (int), per stage name (dict), or None to read it from the stage's
        last layer (`infer_out_channels`).
    Returns the wrapped stage names.
    """
    names = match_modules(model, after, what="adapter stage")
    for name in names:
        stage = get_module(model, name)
        c = _channels_for(channels, name, stage)
        ref = next(stage.parameters(), None)
        adapter = BottleneckAdapter(c, hidden=hidden, reduction=reduction)
        if ref is not None:
            adapter.to(device=ref.device, dtype=ref.dtype)
        set_module(model, name, StageWithAdapter(stage, adapter, name))
    return names
