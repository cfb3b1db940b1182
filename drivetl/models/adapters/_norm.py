"""Normalization for a new domain: BatchNorm statistics re-estimated on target data, and per-domain norms.

`reestimate_batchnorm` (AdaBN) recomputes the running mean/variance of every BatchNorm layer that
the forward pass reaches, as a cumulative average over the given batches (momentum=None), with
no gradient and no parameter change. Layers the forward does not reach keep their statistics.

`DomainBatchNorm` holds one BatchNorm per domain name (same class and size as the layer it
replaces) and uses the active one; `convert_domain_norms` puts it in place of existing BatchNorm
layers, every domain starting as a copy of the pretrained layer, and `set_domain` switches all of
them. The first domain is the pretrained one: its tensors keep their base keys (`base_key`), the
others are adapter tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from drivetl.errors import ConfigError
from drivetl.models._keys import DROP, KeyRouted, get_module, match_modules, set_module

_BN = nn.modules.batchnorm._BatchNorm


def _default_forward(model: nn.Module, batch: Any) -> Any:
    return model(batch)


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module,
    batches: Iterable[Any],
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
    max_batches: int | None = None,
) -> int:
    """Recompute BatchNorm running statistics of `model` on `batches`, in place.

    forward_fn(model, batch) runs one forward pass (default: ``model(batch)``); move the batch to
    the model's device there. Dropout and other train/eval-dependent layers run in eval mode,
    BatchNorm layers in train mode (normalizing with batch statistics, as during training).
    Returns the number of batches used; ConfigError when there was none. The model's train/eval
    modes and the layers' momenta are restored afterwards.
    """
    forward_fn = forward_fn or _default_forward
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    started: set[nn.Module] = set()

    def first_use(module: nn.Module, _inputs: Any) -> None:
        if module not in started:
            started.add(module)
            module.reset_running_stats()
            module.momentum = None

    hooks = [m.register_forward_pre_hook(first_use) for m in bns]
    count = 0
    try:
        model.eval()
        for m in bns:
            m.train()
        for batch in batches:
            if max_batches is not None and count >= max_batches:
                break
            forward_fn(model, batch)
            count += 1
    finally:
        for h in hooks:
            h.remove()
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    if count == 0:
        raise ConfigError("reestimate_batchnorm got no batches; give it some target-domain batches")
    return count


class DomainBatchNorm(KeyRouted, nn.Module):
    """One BatchNorm per domain; the active one normalizes. x: as the wrapped BatchNorm's input."""

    def __init__(self, base: _BN, domains: Sequence[str], active: str | None = None) -> None:
        super().__init__()
        domains = list(domains)
        if not domains or len(set(domains)) != len(domains):
            raise ConfigError(f"domain norms need distinct domain names, got {domains}")
        for d in domains:
            if not d or "." in d:
                raise ConfigError(f"domain name {d!r} must be non-empty and contain no '.'")
        self.domains = domains
        self.norms = nn.ModuleDict(
            {d: (base if i == 0 else copy.deepcopy(base)) for i, d in enumerate(domains)}
        )
        self.active = active or domains[0]
        self.set_domain(self.active)

    def set_domain(self, name: str) -> None:
        """Normalize with the BatchNorm of domain `name` from now on."""
        if name not in self.norms:
            raise ConfigError(f"unknown domain {name!r}; this layer has {self.domains}")
        self.active = name

    def route_key(self, rest: Sequence[str]) -> tuple[str, int]:
        """The first (pretrained) domain's tensors keep their base keys; the others are adapter-only."""
        if rest[0] == "norms" and len(rest) > 1 and rest[1] == self.domains[0]:
            return ("skip", 2)
        return DROP

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize with the active domain's BatchNorm."""
        return self.norms[self.active](x)

    def recipe_entry(self) -> dict[str, Any]:
        """What `from_recipe` needs to replace the BatchNorm again (the adapter file's recipe entry)."""
        return {"domains": list(self.domains), "active": self.active}

    @staticmethod
    def from_recipe(target: nn.Module, entry: Mapping[str, Any], name: str) -> nn.Module:
        """Per-domain copies of the BatchNorm `target`, as the recipe entry lists them."""
        return DomainBatchNorm(target, entry["domains"], entry.get("active"))

    def extra_repr(self) -> str:  # noqa: D401 - torch's repr hook
        return f"domains={self.domains}, active={self.active!r}"


def convert_domain_norms(
    model: nn.Module, domains: Sequence[str], targets: Sequence[str] = ("*",), active: str | None = None
) -> list[str]:
    """Replace the BatchNorm layers named by `targets` (globs, default all) with `DomainBatchNorm`.

    domains: the domain names, the pretrained (source) domain first. Returns the replaced names.
    """
    names = match_modules(model, targets, types=(_BN,), what="domain norm")
    inside = [f"{n}." for n, m in model.named_modules() if isinstance(m, DomainBatchNorm)]
    names = [n for n in names if not any(n.startswith(p) for p in inside)]
    for name in names:
        set_module(model, name, DomainBatchNorm(get_module(model, name), domains, active))
    return names


def set_domain(model: nn.Module, name: str) -> int:
    """Make `name` the active domain of every `DomainBatchNorm` of `model`; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, DomainBatchNorm)]
    for m in layers:
        m.set_domain(name)
    return len(layers)
