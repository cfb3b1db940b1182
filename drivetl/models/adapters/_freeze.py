"""Freezing policies for fine-tuning, and the trainable-parameter count every run prints and logs.

Policies (a closed set):

- ``"adapters+head"``: only adapter tensors (LoRA A/B, bottleneck adapters, FiLM, non-source
  domain norms) and the head train; every pretrained tensor of the encoders is frozen.
- ``"last_k"``: adapters, the head and the last `k` of the ordered `stage_names` train.
- ``"full"``: everything trains (the full fine-tuning baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

from torch import nn

from drivetl.errors import ConfigError
from drivetl.models._keys import base_key

Policy = Literal["adapters+head", "last_k", "full"]
POLICIES: tuple[str, ...] = ("adapters+head", "last_k", "full")


class ParameterCount(NamedTuple):
    """Trainable and total parameter counts of a model; unpacks as (trainable, total, share)."""

    trainable: int
    total: int
    share: float

    def summary(self) -> str:
        """One line for the console: ``trainable 12,345 / 1,234,567 parameters (1.00%)``."""
        return f"trainable {self.trainable:,} / {self.total:,} parameters ({100.0 * self.share:.2f}%)"

    def as_dict(self) -> dict[str, float]:
        """Metrics for a logger: params/trainable, params/total, params/trainable_share."""
        return {"params/trainable": float(self.trainable), "params/total": float(self.total),
                "params/trainable_share": self.share}


def count_parameters(model: nn.Module) -> ParameterCount:
    """(trainable, total, trainable / total) over `model`'s parameters (shared ones counted once)."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParameterCount(trainable, total, trainable / total if total else 0.0)


def parameter_table(model: nn.Module, depth: int = 1) -> str:
    """A text table of trainable/total parameters per module prefix of `depth` dotted levels."""
    rows: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:depth]) if "." in name else name
        row = rows.setdefault(key, [0, 0])
        row[1] += p.numel()
        if p.requires_grad:
            row[0] += p.numel()
    width = max([len(k) for k in rows] + [6])
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'total':>12}"]
    for key, (tr, tot) in rows.items():
        lines.append(f"{key:<{width}}  {tr:>12,}  {tot:>12,}")
    lines.append(count_parameters(model).summary())
    return "\n".join(lines)


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def apply_freezing(
    model: nn.Module,
    policy: Policy,
    head_prefixes: Sequence[str] = (),
    stage_names: Sequence[str] = (),
    k: int = 1,
) -> ParameterCount:
    """Set `requires_grad` of every parameter of `model` by `policy`; returns the new count.

    head_prefixes: module-name prefixes of the task head (``"head"``), trained by the first two
        policies. Names may be given as in the pretrained model or in the adapted one.
    stage_names: the backbone stages in forward order, for ``"last_k"``; `k` of them train.
    ConfigError for an unknown policy, a bad `k`, or prefixes that name no parameter.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown freezing policy {policy!r}; choose one of {', '.join(POLICIES)}")
    names = [name for name, _ in model.named_parameters()]
    bases = {name: base_key(model, name) for name in names}
    for prefix in head_prefixes:
        if not any(_under(n, [prefix]) or (b is not None and _under(b, [prefix])) for n, b in bases.items()):
            raise ConfigError(f"head prefix {prefix!r} names no parameter of {type(model).__name__}")
    trained_stages: list[str] = []
    if policy == "last_k":
        if not stage_names:
            raise ConfigError("freezing policy 'last_k' needs stage_names (the backbone stages in order)")
        if not 0 <= k <= len(stage_names):
            raise ConfigError(f"freezing policy 'last_k': k={k} but there are {len(stage_names)} stages")
        trained_stages = list(stage_names[len(stage_names) - k :])

    for name, p in model.named_parameters():
        b = bases[name]
        if policy == "full":
            train = True
        else:
            is_adapter = b is None
            in_head = _under(name, head_prefixes) or (b is not None and _under(b, head_prefixes))
            in_stage = _under(name, trained_stages) or (b is not None and _under(b, trained_stages))
            train = is_adapter or in_head or in_stage
        p.requires_grad_(train)
    return count_parameters(model)


def frozen_norms_eval(model: nn.Module) -> int:
    """Put every normalization layer whose parameters are all frozen into eval mode.

    Call after ``model.train()`` (e.g. at the start of each training epoch) so frozen BatchNorm
    layers keep their pretrained (or re-estimated) statistics instead of drifting. Returns the
    number of layers switched.
    """
    count = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if not any(p.requires_grad for p in params):
                m.eval()
                count += 1
    return count
