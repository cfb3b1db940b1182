"""Loading pretrained checkpoints into a (fine-tune) model, with a report and early, clear failures.

A checkpoint is either a PyTorch Lightning checkpoint (tensors under ``"state_dict"``, keys
usually prefixed by the LightningModule attribute, e.g. ``"model."``) or a plain state dict, read
with ``torch.load(..., weights_only=True)`` only.

Checkpoint metadata — the ``"drivetl"`` key at the top level of the checkpoint dict (a Lightning
module writes it in ``on_save_checkpoint``; `checkpoint_metadata` builds it). Plain types only
(str, int, float, bool, None, list, dict), so weights-only loading accepts it::

    checkpoint["drivetl"] = {
        "format": 1,
        "arch": "drivetl.models.lidar.PillarEncoder",   # the model's architecture name
        "arch_signature": "sha256:...",                # arch_signature(model): keys + shapes
        "classes": ["vehicle", "pedestrian", "cyclist"],  # head class order
        "class_dims": {"head.heatmap.weight": 0},      # optional: class-indexed tensors (key glob -> dim)
        "grid": {...},                                 # the encoder's voxel grid (ranges, voxel size)
        "rig": {...},                                  # rig_to_dict of the source rig, or None
        "config": {...},                               # the training config, or None
    }

Without it, the class list is looked for in ``checkpoint["hyper_parameters"]["classes"]``.

`load_pretrained` maps checkpoint keys onto the model (adapters already applied or not), loads the
tensors under the `include` prefixes, maps class-indexed head tensors by class name when the class
list changed (kept classes copied, new ones keep the model's fresh initialization, removed ones
dropped), prints a report, and raises `CheckpointError` at once, naming the file, when the
checkpoint is from another architecture.
"""

from __future__ import annotations

import fnmatch
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drivetl.errors import CheckpointError
from drivetl.models._keys import arch_signature, base_key

META_KEY = "drivetl"
META_FORMAT = 1
#: the architecture name detector checkpoints record (`load_pretrained(arch=...)`)
ARCH = "drivetl.models.BEVDetector"
#: the frame and units a detector's training data were brought to (recorded in its checkpoints)
CANONICAL_FRAME = (
    "vehicle frame x forward, y left, z up (metres), ground under the vehicle at z = 0, "
    "intensity canonical in [0, 1]; cameras: Waymo camera frame, pinhole + k1 k2 p1 p2 k3"
)
_PREFIXES = ("", "model.", "module.", "model.module.", "net.", "network.")


def plain_builtins(value: Any) -> Any:
    """`value` as plain builtins (dicts, lists, str, numbers, bool, None; anything else as its str),
    so that checkpoint metadata loads with ``torch.load(weights_only=True)``."""
    if isinstance(value, Mapping):
        return {str(k): plain_builtins(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain_builtins(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def checkpoint_metadata(
    model: nn.Module,
    *,
    arch: str,
    classes: Sequence[str],
    grid: dict[str, Any] | None = None,
    rig: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    class_dims: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The ``checkpoint["drivetl"]`` dict described in the module docstring, for `model`."""
    return {
        "format": META_FORMAT,
        "arch": str(arch),
        "arch_signature": arch_signature(model),
        "classes": [str(c) for c in classes],
        "class_dims": dict(class_dims or {}),
        "grid": dict(grid or {}),
        "rig": rig,
        "config": config,
    }


def detector_metadata(
    detector: nn.Module,
    hparams: Mapping[str, Any],
    seen: Mapping[str, Any],
    *,
    task: str = "pretrain",
    detector_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``checkpoint["drivetl"]`` entry of a `BEVDetector` (plain builtins only).

    `checkpoint_metadata`'s fields (format, arch, arch_signature, classes, class_dims, grid, rig,
    config) plus: task, detector config (``hparams["detector"]`` unless given), BEV geometry, the
    point columns, camera names, image size and rig names the training data had (from `seen`), and
    the canonical frame. Fine-tuning adds its adapter fields on top.
    """
    grid = detector.lidar.grid
    geo = detector.geometry
    meta = checkpoint_metadata(
        detector,
        arch=ARCH,
        classes=list(detector.classes),
        grid={"voxel_size": list(grid.voxel_size), "point_range": list(grid.point_range)},
        rig=None,
        config=plain_builtins(dict(hparams)),
        class_dims={"head.heatmap.1.*": 0},
    )
    meta.update(
        {
            "task": task,
            "detector": plain_builtins(hparams["detector"] if detector_config is None else detector_config),
            "state_dict_prefix": "model.",
            "bev": {
                "x_min": geo.x_min,
                "y_min": geo.y_min,
                "cell_x": geo.cell_x,
                "cell_y": geo.cell_y,
                "height": geo.height,
                "width": geo.width,
            },
            "point_columns": plain_builtins(seen.get("columns")),
            "camera_names": plain_builtins(seen.get("camera_names")),
            "image_size": plain_builtins(seen.get("image_size")),
            "rigs": sorted(seen.get("rigs", ())),
            "frame": CANONICAL_FRAME,
        }
    )
    return meta


@dataclass
class LoadReport:
    """What `load_pretrained` did, tensor by tensor (keys in the pretrained model's name space)."""

    path: str
    prefix: str = ""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    class_mapped: list[str] = field(default_factory=list)
    classes_new: list[str] = field(default_factory=list)
    classes_dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None

    def __str__(self) -> str:
        def head(items: Sequence[Any], n: int = 5) -> str:
            shown = ", ".join(str(i) for i in items[:n])
            return shown + (f", ... (+{len(items) - n})" if len(items) > n else "")

        lines = [f"checkpoint {self.path}" + (f" (prefix {self.prefix!r} stripped)" if self.prefix else "")]
        lines.append(f"  loaded      {len(self.loaded):5d}")
        if self.class_mapped:
            lines.append(f"  class-mapped {len(self.class_mapped):4d}: {head(self.class_mapped)}; "
                         f"new classes {self.classes_new or '-'}, dropped {self.classes_dropped or '-'}")
        mm = [f"{k} {c}->{m}" for k, c, m in self.mismatched]
        for label, items in (("missing", self.missing), ("mismatched", mm), ("unexpected", self.unexpected)):
            lines.append(f"  {label:<11} {len(items):5d}" + (f": {head(items)}" if items else ""))
        lines.append(f"  not included {len(self.excluded):4d}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, drivetl metadata or None) of a Lightning or plain checkpoint; weights-only."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p}: refused by weights-only loading ({first}); the checkpoint holds Python objects "
            "beyond tensors and plain containers: re-save it with plain types"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any other failure means not a torch checkpoint
        raise CheckpointError(f"{p}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{p}: expected a dict (a state dict or a Lightning checkpoint), got {type(obj).__name__}"
        )
    meta = obj.get(META_KEY) if isinstance(obj.get(META_KEY), dict) else None
    hparams = obj.get("hyper_parameters")
    if meta is None and isinstance(hparams, dict) and "classes" in hparams:
        meta = {"classes": list(hparams["classes"])}
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), dict):
            state = obj[key]
            break
    else:
        state = obj
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{p}: no tensors found (looked under 'state_dict', 'model' and the top level)")
    return tensors, meta


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _class_indexed(key: str, class_dims: dict[str, int]) -> int | None:
    for pattern, dim in class_dims.items():
        if fnmatch.fnmatchcase(key, pattern):
            return int(dim)
    return None


def _map_classes(
    path: str, key: str, src: torch.Tensor, dst: torch.Tensor, dim: int,
    old: Sequence[str], new: Sequence[str],
) -> torch.Tensor | None:
    """`dst` with the slices of kept classes copied from `src` along `dim` (class-major blocks)."""
    if src.ndim != dst.ndim or dim >= src.ndim:
        return None
    if any(s != d for i, (s, d) in enumerate(zip(src.shape, dst.shape, strict=True)) if i != dim):
        return None
    if src.shape[dim] % len(old) or dst.shape[dim] % len(new):
        return None
    g = src.shape[dim] // len(old)
    if g != dst.shape[dim] // len(new):
        return None
    out = dst.detach().clone()
    for j, name in enumerate(new):
        if name in old:
            i = old.index(name)
            out.narrow(dim, j * g, g).copy_(src.narrow(dim, i * g, g))
    return out


def load_pretrained(
    model: nn.Module,
    ckpt_path: str | os.PathLike,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    arch: str | None = None,
    classes: Sequence[str] | None = None,
    class_map: dict[str, str] | None = None,
    class_dims: dict[str, int] | None = None,
    prefix: str | None = None,
    max_mismatch_share: float = 0.2,
    min_found_share: float = 0.5,
    print_fn: Callable[[str], Any] | None = print,
) -> LoadReport:
    """Load the pretrained tensors of `ckpt_path` into `model` in place; returns (and prints) a report.

    include / exclude: prefixes of the pretrained model's module names to load / skip, e.g.
        ``include=("encoders",)`` for the encoders only (None: everything).
    arch: the model's architecture name; a checkpoint whose metadata names another fails.
    classes: the model's head classes, in order. When the checkpoint's list (after renaming by
        `class_map`, old name -> new name) differs, class-indexed tensors are mapped by name: the
        tensors named by `class_dims` (glob over keys -> class dim; default: the checkpoint
        metadata's), else tensors that differ from the model in one dim of size n_classes * g.
    prefix: the key prefix to strip from checkpoint keys (default: the one that matches best of
        "", "model.", "module.", ...).
    A checkpoint from another architecture fails with CheckpointError before anything is loaded:
    arch name differs, fewer than `min_found_share` of the included tensors found, or more than
    `max_mismatch_share` of the found ones with another shape (class-mapped ones excepted).
    """
    where = str(ckpt_path)
    state, meta = read_checkpoint(ckpt_path)
    if arch is not None and meta and meta.get("arch") and meta["arch"] != arch:
        raise CheckpointError(
            f"{where}: checkpoint architecture is {meta['arch']!r}, the model is {arch!r}; "
            "use a checkpoint pretrained with this architecture"
        )
    model_state = model.state_dict()
    by_base = {b: k for k, b in ((k, base_key(model, k)) for k in model_state) if b is not None}

    if prefix is None:
        prefix = max(_PREFIXES, key=lambda p: sum(
            1 for k in state if k.startswith(p) and k[len(p):] in by_base))
    ckpt = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    report = LoadReport(path=where, prefix=prefix, metadata=meta)
    report.unexpected = sorted(set(ckpt) - set(by_base))
    report.unexpected += sorted(k for k in state if not k.startswith(prefix))

    included = [b for b in by_base if (include is None or _under(b, include)) and not _under(b, exclude)]
    report.excluded = sorted(set(by_base) - set(included))
    if not included:
        raise CheckpointError(
            f"{where}: include={list(include or [])} names no tensor of {type(model).__name__}"
        )

    old_classes = list((meta or {}).get("classes") or [])
    class_map = class_map or {}
    old_renamed = [class_map.get(c, c) for c in old_classes]
    remap = classes is not None and bool(old_classes) and list(classes) != old_renamed
    dims = dict(class_dims if class_dims is not None else (meta or {}).get("class_dims") or {})
    if remap and not dims and len(old_renamed) == len(classes):
        raise CheckpointError(
            f"{where}: checkpoint classes {old_classes} and model classes {list(classes)} differ but "
            "have the same count, so the class-indexed tensors cannot be told by shape; pass class_dims"
        )

    to_copy: dict[str, torch.Tensor] = {}
    for b in included:
        target = model_state[by_base[b]]
        if b not in ckpt:
            report.missing.append(b)
            continue
        src = ckpt[b]
        dim = _class_indexed(b, dims) if remap else None
        if remap and dim is None and not dims and src.shape != target.shape:
            diff = [i for i, (s, t) in enumerate(zip(src.shape, target.shape, strict=False)) if s != t]
            dim = diff[0] if src.ndim == target.ndim and len(diff) == 1 else None
        if dim is not None:
            mapped = _map_classes(where, b, src, target, dim, old_renamed, list(classes))
            if mapped is None and b in dims:
                raise CheckpointError(
                    f"{where}: {b}: shape {tuple(src.shape)} does not split into {len(old_renamed)} "
                    f"classes along dim {dim} like {tuple(target.shape)}"
                )
            if mapped is not None:
                to_copy[b] = mapped
                report.class_mapped.append(b)
                continue
        if tuple(src.shape) != tuple(target.shape):
            report.mismatched.append((b, tuple(src.shape), tuple(target.shape)))
            continue
        to_copy[b] = src
        report.loaded.append(b)

    found = len(included) - len(report.missing)
    if found < min_found_share * len(included) or found == 0:
        raise CheckpointError(
            f"{where}: only {found} of the model's {len(included)} included tensors are in the checkpoint "
            f"(e.g. missing {report.missing[:3]}); it is from another architecture "
            f"(checkpoint arch {(meta or {}).get('arch', 'unknown')!r}, signature "
            f"{(meta or {}).get('arch_signature', 'unknown')}; model signature {arch_signature(model)})"
        )
    if len(report.mismatched) > max_mismatch_share * found:
        shown = "; ".join(f"{k}: checkpoint {c} vs model {m}" for k, c, m in report.mismatched[:3])
        raise CheckpointError(
            f"{where}: {len(report.mismatched)} of {found} tensors have other shapes ({shown}); "
            "the checkpoint is from another architecture or configuration (channels, grid, classes)"
        )
    if remap and not report.class_mapped:
        report.warnings.append(
            f"classes changed from {old_classes} to {list(classes)} but no loaded tensor is class-indexed "
            "(head not included, or pass class_dims to name the head's class tensors)"
        )
    if remap:
        report.classes_new = [c for c in classes if c not in old_renamed]
        report.classes_dropped = [c for c in old_renamed if c not in classes]
    with torch.no_grad():
        for b, value in to_copy.items():
            model_state[by_base[b]].copy_(value)
    if print_fn is not None:
        print_fn(str(report))
    return report
