"""Build a model from a plain config: ``{"class_path": "drivetl.models....", "init_args": {...}}``.

The same YAML shape as the training configs (real import paths, no registry). Nested values that
are themselves ``class_path`` dicts are built first. Only classes under ``drivetl.`` can be named,
so a config (or a checkpoint's stored config) cannot make this import arbitrary code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from drivetl.errors import ConfigError

__all__ = ["instantiate"]


def instantiate(spec: Any, where: str = "model") -> Any:
    """Recursively build `spec`; plain values are returned as they are (lists and dicts walked)."""
    if isinstance(spec, Mapping) and "class_path" in spec:
        path = spec["class_path"]
        extra = set(spec) - {"class_path", "init_args"}
        if extra:
            raise ConfigError(f"{where}: unexpected keys {sorted(extra)} beside class_path/init_args")
        if not isinstance(path, str) or not path.startswith("drivetl.") or "." not in path:
            raise ConfigError(
                f"{where}.class_path: {path!r} must be a drivetl class, e.g. drivetl.models.BEVDetector"
            )
        module_name, _, name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{where}.class_path: cannot import {path!r} ({exc})") from None
        args = spec.get("init_args") or {}
        if not isinstance(args, Mapping):
            raise ConfigError(f"{where}.init_args must be a mapping, got {type(args).__name__}")
        kwargs = {k: instantiate(v, f"{where}.{k}") for k, v in args.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{where}: cannot build {path} ({exc})") from None
    if isinstance(spec, Mapping):
        return {k: instantiate(v, f"{where}.{k}") for k, v in spec.items()}
    if isinstance(spec, list | tuple):
        return type(spec)(instantiate(v, f"{where}[{i}]") for i, v in enumerate(spec))
    return spec
