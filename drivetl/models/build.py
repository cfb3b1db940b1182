"""Build a detector from a plain config: ``{"class_path": "drivetl.models....", "init_args": {...}}``.

The same YAML shape as the training configs (real import paths, no registry). Nested values that
are themselves ``class_path`` dicts are built first.

A detector config also travels inside checkpoints and adapter files, which teams share: it is
data, never code. So the whole config is validated before anything is constructed or imported:
every ``class_path`` must name one of the detector component classes in `COMPONENTS` (an
allow-list, not "anything under drivetl."), every ``init_args`` key must be a parameter of that
class, and every other value must be plain data (str, int, float, bool, None, lists and mappings
of them), within bounded depth and size. Error messages quote at most a short prefix of a value.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from drivetl.errors import ConfigError

__all__ = ["COMPONENTS", "instantiate", "validate"]

# Public names of the classes a detector config may name. The table maps both the public path and
# the defining module's path (what older checkpoints may record) to the class.
COMPONENTS = (
    "drivetl.models.BEVDetector",
    "drivetl.models.LidarEncoder",
    "drivetl.models.CameraEncoder",
    "drivetl.models.ImageBackbone",
)
_MAX_DEPTH = 16
_MAX_NODES = 10_000
_MAX_STR = 4096
_PLAIN = (str, int, float, bool, type(None))


def _short(value: Any, limit: int = 60) -> str:
    """repr() of `value`, cut to `limit` characters (a bad value may be huge)."""
    text = repr(value) if not isinstance(value, Mapping | list | tuple) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.cache
def _table() -> dict[str, type]:
    from drivetl.models.camera import CameraEncoder, ImageBackbone
    from drivetl.models.detector import BEVDetector
    from drivetl.models.lidar import LidarEncoder

    table: dict[str, type] = {}
    for cls in (BEVDetector, LidarEncoder, CameraEncoder, ImageBackbone):
        table[f"drivetl.models.{cls.__name__}"] = cls
        table[f"{cls.__module__}.{cls.__qualname__}"] = cls
    assert set(COMPONENTS) <= set(table)
    return table


def _parameters(cls: type) -> frozenset[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params if p.name != "self" and p.kind in kinds)


def validate(spec: Any, where: str = "model") -> None:
    """Check a config tree without building or importing anything (see the module docstring).

    Raises:
        ConfigError: naming the key path (`where`...) and what is wrong.
    """
    nodes = 0

    def walk(node: Any, at: str, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > _MAX_NODES:
            raise ConfigError(f"{where}: the config has more than {_MAX_NODES} values; not a detector config")
        if depth > _MAX_DEPTH:
            raise ConfigError(f"{at}: nested deeper than {_MAX_DEPTH} levels; not a detector config")
        if isinstance(node, Mapping):
            bad_keys = [k for k in node if not isinstance(k, str)]
            if bad_keys:
                raise ConfigError(f"{at}: keys must be strings, got {_short(bad_keys[0])}")
            if "class_path" in node:
                path = node["class_path"]
                extra = set(node) - {"class_path", "init_args"}
                if extra:
                    raise ConfigError(
                        f"{at}: unexpected keys {sorted(extra)[:5]} beside class_path/init_args"
                    )
                if not isinstance(path, str) or path not in _table():
                    raise ConfigError(
                        f"{at}.class_path: {_short(path)} is not a detector component; allowed: "
                        f"{', '.join(COMPONENTS)}"
                    )
                args = node.get("init_args") or {}
                if not isinstance(args, Mapping):
                    raise ConfigError(f"{at}.init_args must be a mapping, got {type(args).__name__}")
                known = _parameters(_table()[path])
                unknown = sorted(str(k) for k in args if k not in known)
                if unknown:
                    raise ConfigError(
                        f"{at}: cannot build {path}: unknown init_args "
                        f"{', '.join(_short(k, 40) for k in unknown[:5])} "
                        f"(it takes {', '.join(sorted(known))})"
                    )
                for k, v in args.items():
                    walk(v, f"{at}.{k}", depth + 1)
                return
            for k, v in node.items():
                walk(v, f"{at}.{k}", depth + 1)
            return
        if isinstance(node, list | tuple):
            for i, v in enumerate(node):
                walk(v, f"{at}[{i}]", depth + 1)
            return
        if not isinstance(node, _PLAIN):
            raise ConfigError(f"{at}: {type(node).__name__} is not plain config data")
        if isinstance(node, str) and len(node) > _MAX_STR:
            raise ConfigError(f"{at}: a string of {len(node)} characters ({_short(node)})")

    walk(spec, where, 0)


def instantiate(spec: Any, where: str = "model") -> Any:
    """Validate `spec` (`validate`), then build it bottom-up; plain values are returned as they are.

    Raises:
        ConfigError: an invalid config (nothing was constructed), or a constructor's own refusal.
    """
    validate(spec, where)
    return _build(spec, where)


def _build(spec: Any, where: str) -> Any:
    if isinstance(spec, Mapping) and "class_path" in spec:
        path = spec["class_path"]
        kwargs = {k: _build(v, f"{where}.{k}") for k, v in (spec.get("init_args") or {}).items()}
        try:
            return _table()[path](**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot build {path} ({_short(str(exc), 200)})") from None
    if isinstance(spec, Mapping):
        return {k: _build(v, f"{where}.{k}") for k, v in spec.items()}
    if isinstance(spec, list | tuple):
        return type(spec)(_build(v, f"{where}[{i}]") for i, v in enumerate(spec))
    return spec
