"""Adapter export: the trained tensors alone, in one small safetensors file, re-applicable later.

File layout (``*.safetensors``):

- tensors: every trainable parameter, every adapter-only tensor (LoRA A/B, adapter and FiLM
  weights, non-source domain norms) and, by default, the running statistics of every BatchNorm
  layer (re-estimated or drifted during fine-tuning; a few floats per channel). Keys are the
  adapted model's state-dict keys.
- header metadata ``"drivetl.adapters"``: a JSON object with
  ``format`` ("drivetl.adapters/1"), ``recipe`` (what to wrap where: one entry per adapted module,
  see `adapter_recipe`), ``methods`` (the kinds in the recipe), ``arch_signature`` (of the base
  model, `arch_signature`), ``base_hash`` (hash of the base tensors *not* in the file: the frozen
  pretrained weights the adapters were trained on), ``trainable``/``total`` parameter counts, and
  ``metadata`` (the caller's own dict: config, method name, targets, rank, alpha, ...).

`load_adapters` takes a freshly built model with the same pretrained weights loaded, checks the
signature and the base hash, re-applies the recipe and loads the tensors; outputs are then
identical to the model that was saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drivetl._io import atomic_write_bytes
from drivetl.errors import CheckpointError
from drivetl.models._keys import arch_signature, base_key, get_module, set_module, tensors_hash

from ._freeze import count_parameters
from ._methods import METHODS

FORMAT = "drivetl.adapters/1"
META_KEY = "drivetl.adapters"
_STAT_NAMES = ("running_mean", "running_var", "num_batches_tracked")


def _kind(module: nn.Module) -> str | None:
    """The method (a `METHODS` name) whose adapter module `module` is, or None."""
    for kind, method in METHODS.items():
        if method.modules and isinstance(module, method.modules):
            return kind
    return None


def adapter_recipe(model: nn.Module) -> list[dict[str, Any]]:
    """One JSON-ready entry per adapted module of `model`, outermost first.

    Each entry is ``{"kind": METHOD, "name": NAME, **module.recipe_entry()}``, e.g.
    ``{"kind": "lora", "name", "rank", "alpha", "dropout"}``,
    ``{"kind": "bottleneck", "name", "channels", "hidden"}``,
    ``{"kind": "film", "name", "cond_dim", "channels", "hidden"}``,
    ``{"kind": "domain_norm", "name", "domains", "active"}``. Names are in the adapted model.
    """
    recipe: list[dict[str, Any]] = []
    for name, m in model.named_modules():
        kind = _kind(m)
        if kind is not None:
            recipe.append({"kind": kind, "name": name, **m.recipe_entry()})
    return sorted(recipe, key=lambda e: e["name"].count("."))


def apply_recipe(model: nn.Module, recipe: list[dict[str, Any]], where: str = "recipe") -> None:
    """Re-create the adapted modules of `recipe` on a plain model, in place (outermost first)."""
    for entry in sorted(recipe, key=lambda e: e["name"].count(".")):
        name, kind = entry["name"], entry["kind"]
        method = METHODS.get(kind)
        if method is None or not method.modules:
            raise CheckpointError(f"{where}: unknown adapter kind {kind!r} for {name!r}")
        try:
            target = get_module(model, name)
        except Exception:
            raise CheckpointError(
                f"{where}: adapters expect a module {name!r} ({kind}), which this model lacks; "
                "build the model the adapters were trained on"
            ) from None
        ref = next(target.parameters(), None)
        new = method.modules[0].from_recipe(target, entry, name)
        if ref is not None:
            new.to(device=ref.device, dtype=ref.dtype)
        set_module(model, name, new)


def _export_keys(model: nn.Module, include_norm_stats: bool) -> list[str]:
    state_keys = set(model.state_dict().keys())
    keys = {name for name, p in model.named_parameters() if p.requires_grad}
    keys |= {k for k in state_keys if base_key(model, k) is None}
    if include_norm_stats:
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                keys |= {f"{name}.{s}" if name else s for s in _STAT_NAMES}
    return sorted(keys & state_keys)


def _base_hash(model: nn.Module, exported: set[str]) -> str:
    items = []
    for key, value in model.state_dict().items():
        b = base_key(model, key)
        if b is not None and key not in exported:
            items.append((b, value))
    return tensors_hash(items)


def save_adapters(
    model: nn.Module,
    path: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    *,
    include_norm_stats: bool = True,
) -> dict[str, Any]:
    """Write `model`'s adapter/trainable tensors and the recipe to `path` (atomic); returns the header.

    metadata: the caller's JSON-serializable description (method, targets, rank, config...).
    """
    keys = _export_keys(model, include_norm_stats)
    if not keys:
        raise CheckpointError(f"{path}: nothing to export: the model has no adapter or trainable tensor")
    state = model.state_dict()
    tensors = {k: state[k].detach().cpu().clone().contiguous() for k in keys}
    count = count_parameters(model)
    header = {
        "format": FORMAT,
        "recipe": adapter_recipe(model),
        "methods": sorted({e["kind"] for e in adapter_recipe(model)}),
        "arch_signature": arch_signature(model),
        "base_hash": _base_hash(model, set(keys)),
        "trainable": count.trainable,
        "total": count.total,
        "metadata": metadata or {},
    }
    try:
        meta_json = json.dumps(header)
    except TypeError as exc:
        raise CheckpointError(f"{path}: adapter metadata is not JSON-serializable: {exc}") from None
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors, metadata={META_KEY: meta_json}))
    return header


def read_adapter_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of an adapter file (see the module docstring); CheckpointError if not one."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: adapter file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise CheckpointError(f"{path}: not a safetensors file ({exc})") from None
    if raw is None:
        raise CheckpointError(f"{path}: no {META_KEY!r} header; not written by save_adapters")
    try:
        header = json.loads(raw)
    except ValueError:
        raise CheckpointError(
            f"{path}: the {META_KEY!r} header is not valid JSON; the file is damaged"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the {META_KEY!r} header is not a JSON object; the file is damaged")
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: unsupported adapter format {header.get('format')!r} (expected {FORMAT})"
        )
    return header


def load_adapters(model: nn.Module, path: str | os.PathLike, *, check_base: bool = True) -> dict[str, Any]:
    """Re-apply the adapters of `path` on `model` (built and loaded with the pretrained weights), in place.

    Raises CheckpointError naming the file when the architecture signature differs, when the
    pretrained weights differ from those the adapters were trained on (unless `check_base=False`),
    when the model already carries different adapters, or when a tensor does not fit. Returns the
    file's header.
    """
    from safetensors.torch import load_file

    header = read_adapter_metadata(path)
    sig = arch_signature(model)
    if sig != header["arch_signature"]:
        raise CheckpointError(
            f"{path}: adapters were trained on an architecture with signature {header['arch_signature']}, "
            f"this model has {sig}; build the model with the configuration they were trained with"
        )
    current = adapter_recipe(model)
    if current and current != header["recipe"]:
        raise CheckpointError(f"{path}: the model already carries other adapters; load onto a fresh model")
    if not current:
        apply_recipe(model, header["recipe"], where=str(path))
    tensors = load_file(str(path))
    state = model.state_dict()
    for key, value in tensors.items():
        if key not in state:
            raise CheckpointError(f"{path}: tensor {key!r} has no place in this model")
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(state[key].shape)}"
            )
    if check_base:
        got = _base_hash(model, set(tensors))
        if got != header["base_hash"]:
            raise CheckpointError(
                f"{path}: adapters were trained on other pretrained weights "
                f"(base hash {header['base_hash']}, this model {got}); "
                "load the pretrained checkpoint they were trained on first"
            )
    with torch.no_grad():
        for key, value in tensors.items():
            state[key].copy_(value)
    return header
