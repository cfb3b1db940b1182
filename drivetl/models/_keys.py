"""Module-name matching and the base view of an adapted model's state dict.

Adapters wrap or extend modules of a pretrained model. Every adapter module here knows which of
its state-dict entries belong to the pretrained base (and under which base key) and which are
adapter-only. `base_key` walks a key through the module tree and asks each adapter module on the
way; this gives one name space in which an adapted model and its plain pretrained twin agree, so
that `arch_signature` is the same for both and checkpoints load into either.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from drivetl.errors import ConfigError

KEEP = ("keep", 0)
DROP = ("drop", 0)


class KeyRouted:
    """Mixin for adapter modules: how their state-dict keys map onto the pretrained base's keys."""

    def route_key(self, rest: Sequence[str]) -> tuple[str, int]:
        """Given the key parts below this module, return one of:

        ("keep", 0): the next part is a base name, keep it;
        ("skip", n): the next n parts exist only in the adapted model, drop them from the base key;
        ("drop", 0): this entry is adapter-only and has no base counterpart.
        """
        raise NotImplementedError


def base_key(model: nn.Module, key: str) -> str | None:
    """The key `key` of `model.state_dict()` would have in the un-adapted model, or None when the
    entry belongs to an adapter."""
    parts = key.split(".")
    out: list[str] = []
    mod: nn.Module | None = model
    i = 0
    while i < len(parts):
        if isinstance(mod, KeyRouted):
            action, n = mod.route_key(parts[i:])
            if action == "drop":
                return None
            if action == "skip":
                for p in parts[i : i + n]:
                    mod = mod._modules.get(p) if mod is not None else None
                i += n
                continue
        p = parts[i]
        out.append(p)
        mod = mod._modules.get(p) if mod is not None else None
        i += 1
    return ".".join(out)


def is_adapter_key(model: nn.Module, key: str) -> bool:
    """True when the state-dict (or parameter) name `key` belongs to an adapter, not the base."""
    return base_key(model, key) is None


def base_state_items(model: nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    """(adapted key, base key, tensor) for every state-dict entry that belongs to the base model."""
    items = []
    for key, value in model.state_dict().items():
        b = base_key(model, key)
        if b is not None:
            items.append((key, b, value))
    return items


def arch_signature(model: nn.Module) -> str:
    """A short hash of the base model's structure: sorted base keys with their shapes and dtypes.

    Two models with the same signature accept each other's pretrained tensors one to one. Adapters
    do not change it (their tensors are excluded and wrapper levels are removed from the keys).
    """
    h = hashlib.sha256()
    for _, key, value in sorted(base_state_items(model), key=lambda t: t[1]):
        h.update(f"{key}:{tuple(value.shape)}:{value.dtype};".encode())
    return "sha256:" + h.hexdigest()[:16]


def tensors_hash(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A hash of named tensor values (names sorted); identifies the pretrained weights an adapter
    file was trained on."""
    h = hashlib.sha256()
    for key, value in sorted(tensors, key=lambda t: t[0]):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def match_modules(
    model: nn.Module,
    patterns: Sequence[str],
    types: tuple[type, ...] | None = None,
    *,
    what: str = "modules",
) -> list[str]:
    """Names of `model`'s submodules that match any of `patterns`, in module order.

    A pattern is a glob over dotted module names (``encoders.lidar.*.conv*``) or, prefixed with
    ``re:``, a regular expression that must match the whole name. With `types`, only modules of
    those types count. A pattern that matches nothing raises ConfigError naming it and a few names
    that exist, because a silent no-op here means training the wrong parameters.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if name and (types is None or isinstance(mod, types))
    ]
    found: list[str] = []
    for pattern in patterns:
        hits = [name for name, _ in candidates if _pattern_matches(pattern, name)]
        if not hits:
            examples = ", ".join(name for name, _ in candidates[:8]) or "(none)"
            raise ConfigError(
                f"{what} pattern {pattern!r} matches no module of {type(model).__name__}; "
                f"candidates are e.g.: {examples}"
            )
        found.extend(h for h in hits if h not in found)
    order = {name: i for i, (name, _) in enumerate(candidates)}
    return sorted(found, key=order.__getitem__)


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` (dotted); ConfigError when absent."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"{type(model).__name__} has no submodule {name!r}") from None


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule `name` (dotted) of `model` with `new`."""
    parent_name, _, child = name.rpartition(".")
    parent = get_module(model, parent_name) if parent_name else model
    if child not in parent._modules:
        raise ConfigError(f"{type(model).__name__} has no submodule {name!r}")
    parent._modules[child] = new
