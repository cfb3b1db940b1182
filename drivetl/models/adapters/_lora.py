"""LoRA: a frozen pretrained layer plus a trainable low-rank update, for Linear and Conv1d/2d/3d.

For a layer with weight W, the adapted layer computes ``W x + (alpha / rank) * B A x``, where
A is (rank, fan_in) and B is (out, rank). B starts at zero, so a freshly wrapped model computes
exactly what the pretrained one did. For a convolution, ``B A`` is reshaped to the kernel's shape
(out, in/groups, *kernel), i.e. the update is a convolution with the same kernel size, stride,
padding, dilation and groups as the base.

The wrappers subclass the layer they wrap and keep its `weight`/`bias` under the same names, so
state-dict keys of the pretrained tensors do not change; `lora_A`/`lora_B` are the only new
entries. `merge_lora` folds the update into the weight and turns each wrapper back into a plain
layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from drivetl.errors import ConfigError
from drivetl.models._keys import DROP, KEEP, KeyRouted, get_module, match_modules, set_module

_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _LoRAMixin(KeyRouted):
    """Shared LoRA parameters and maths; mixed into a Linear/ConvNd subclass."""

    lora_rank: int
    lora_alpha: float
    weight: nn.Parameter

    def _init_lora(self, rank: int, alpha: float, dropout: float) -> None:
        if rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
        w = self.weight
        fan_in = w[0].numel()
        self.lora_rank = int(rank)
        self.lora_alpha = float(alpha)
        self.lora_A = nn.Parameter(torch.empty(rank, fan_in, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(w.shape[0], rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.weight.requires_grad_(False)
        if getattr(self, "bias", None) is not None:
            self.bias.requires_grad_(False)

    @property
    def lora_scaling(self) -> float:
        return self.lora_alpha / self.lora_rank

    def lora_delta(self) -> torch.Tensor:
        """The weight update ``scaling * B @ A`` in the base weight's shape."""
        return (self.lora_B @ self.lora_A).view(self.weight.shape) * self.lora_scaling

    def route_key(self, rest: Sequence[str]) -> tuple[str, int]:
        """LoRA tensors are adapter-only; the weight and bias keep their base keys."""
        return DROP if rest[0] in ("lora_A", "lora_B", "lora_dropout") else KEEP

    def recipe_entry(self) -> dict[str, Any]:
        """What `from_recipe` needs to wrap the base layer again (the adapter file's recipe entry)."""
        p = self.lora_dropout.p if isinstance(self.lora_dropout, nn.Dropout) else 0.0
        return {"rank": self.lora_rank, "alpha": self.lora_alpha, "dropout": p}

    @staticmethod
    def from_recipe(target: nn.Module, entry: Mapping[str, Any], name: str) -> nn.Module:
        """The LoRA wrapper of `target` described by a recipe entry."""
        return lora_wrap(target, entry["rank"], entry["alpha"], entry.get("dropout", 0.0))

    def extra_repr(self) -> str:  # noqa: D401 - torch's repr hook
        return f"{super().extra_repr()}, lora_rank={self.lora_rank}, lora_alpha={self.lora_alpha}"


class LoRALinear(_LoRAMixin, nn.Linear):
    """`nn.Linear` with a frozen weight and a trainable rank-r update. x: (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Linear.__init__(self, base.in_features, base.out_features, bias=base.bias is not None,
                           device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self._init_lora(rank, alpha, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        return out + (self.lora_dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.lora_scaling


class _LoRAConvNd(_LoRAMixin):
    """Shared constructor/forward of the convolution wrappers."""

    _base_cls: type[nn.modules.conv._ConvNd]

    def __init__(self, base: nn.modules.conv._ConvNd, rank: int, alpha: float, dropout: float = 0.0) -> None:
        self._base_cls.__init__(
            self, base.in_channels, base.out_channels, base.kernel_size, stride=base.stride,
            padding=base.padding, dilation=base.dilation, groups=base.groups,
            bias=base.bias is not None, padding_mode=base.padding_mode, device="meta",
        )
        self.weight = base.weight
        self.bias = base.bias
        self._init_lora(rank, alpha, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            # One convolution with the updated kernel: same cost as the base layer.
            return self._conv_forward(x, self.weight + self.lora_delta(), self.bias)
        return self._conv_forward(x, self.weight, self.bias) + self._conv_forward(
            self.lora_dropout(x), self.lora_delta(), None
        )


class LoRAConv1d(_LoRAConvNd, nn.Conv1d):
    """`nn.Conv1d` with a frozen kernel and a trainable low-rank kernel update. x: (B, C, L)."""

    _base_cls = nn.Conv1d


class LoRAConv2d(_LoRAConvNd, nn.Conv2d):
    """`nn.Conv2d` with a frozen kernel and a trainable low-rank kernel update. x: (B, C, H, W)."""

    _base_cls = nn.Conv2d


class LoRAConv3d(_LoRAConvNd, nn.Conv3d):
    """`nn.Conv3d` with a frozen kernel and a trainable low-rank kernel update. x: (B, C, D, H, W)."""

    _base_cls = nn.Conv3d


LORA_MODULES = (LoRALinear, LoRAConv1d, LoRAConv2d, LoRAConv3d)


def lora_wrap(module: nn.Module, rank: int, alpha: float, dropout: float = 0.0) -> nn.Module:
    """The LoRA wrapper of one supported layer (shares the layer's weight and bias tensors)."""
    # Order matters: check the most specific classes first.
    for base_cls, wrapper in (
        (nn.Conv3d, LoRAConv3d), (nn.Conv2d, LoRAConv2d), (nn.Conv1d, LoRAConv1d), (nn.Linear, LoRALinear),
    ):
        if type(module) is base_cls:
            return wrapper(module, rank, alpha, dropout)
    raise ConfigError(
        f"LoRA supports plain Linear/Conv1d/Conv2d/Conv3d layers, not {type(module).__name__}"
    )


def apply_lora(
    model: nn.Module,
    targets: Sequence[str],
    rank: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
) -> list[str]:
    """Wrap every Linear/Conv layer of `model` whose name matches `targets` with LoRA, in place.

    targets: globs over module names (``"encoders.*.conv2"``) or ``"re:<regex>"`` (full match).
        A pattern may name a block: all supported layers below a matched module are wrapped.
    rank, alpha: the update is scaled by alpha / rank; alpha defaults to rank (scaling 1).
    dropout: dropout on the LoRA branch's input during training.
    Returns the names of the wrapped layers. The wrapped layers' weight and bias are frozen; the
    rest of the model is left as it was (use `apply_freezing` for a freezing policy).
    Layers already wrapped are skipped; ConfigError when a pattern matches nothing.
    """
    alpha = float(rank if alpha is None else alpha)
    matched = match_modules(model, targets, what="LoRA target")
    names: list[str] = []
    for name in matched:
        mod = get_module(model, name)
        if type(mod) in _SUPPORTED:
            if name not in names:
                names.append(name)
        elif not isinstance(mod, LORA_MODULES):
            for sub, child in mod.named_modules(prefix=name):
                if type(child) in _SUPPORTED and sub not in names:
                    names.append(sub)
    if not names:
        raise ConfigError(
            f"LoRA targets {list(targets)} match no Linear/Conv layer of {type(model).__name__}"
        )
    for name in names:
        set_module(model, name, lora_wrap(get_module(model, name), rank, alpha, dropout))
    return names


@torch.no_grad()
def merge_lora(model: nn.Module) -> list[str]:
    """Fold every LoRA update into its base weight and restore plain layers, in place.

    Outputs are unchanged (up to float rounding). The merged weights are left frozen, as the
    wrapped base weights were. Returns the names of the merged layers.
    """
    names = [name for name, mod in model.named_modules() if isinstance(mod, LORA_MODULES)]
    for name in names:
        mod = get_module(model, name)
        merged_weight = nn.Parameter(mod.weight + mod.lora_delta(), requires_grad=False)
        base_cls = next(c for c in type(mod).__mro__ if c in _SUPPORTED)
        if base_cls is nn.Linear:
            plain: nn.Module = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None,
                                         device="meta")
        else:
            plain = base_cls(
                mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None,
                padding_mode=mod.padding_mode, device="meta",
            )
        plain.weight = merged_weight
        plain.bias = mod.bias
        plain.train(mod.training)
        set_module(model, name, plain)
    return names
