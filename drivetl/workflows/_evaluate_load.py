"""What `drivetl evaluate --ckpt` names, and turning it into a ready-to-run detector.

A ``--ckpt`` value is one of:

- a pretraining or fine-tuning checkpoint (``*.ckpt``, Lightning format with the ``"drivetl"``
  metadata entry written by `drivetl.models.checkpoint.detector_metadata`): the detector is rebuilt
  from the stored config, adapters recorded in the metadata are re-applied, the weights loaded;
- an adapter file (``*.safetensors`` written by `drivetl.models.adapters.save_adapters`), applied
  on its base checkpoint: ``ADAPTER@BASE`` names the base explicitly, otherwise the path recorded in
  the adapter file's metadata (``pretrained``/``base_checkpoint``, relative paths resolved beside
  the adapter file, then the working directory) is used.

Head class names are mapped onto the canonical classes (`CLASSES`) by name, through a few common
aliases, and through an explicit ``--class-map``; a head class that maps nowhere is left out of
the evaluation (its predictions are dropped), which the report says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from drivetl.data.dataset import BatchSpec
from drivetl.data.records import CLASSES
from drivetl.errors import CheckpointError
from drivetl.models.adapters import (
    StageWithFiLM,
    build_adapted,
    build_detector,
    load_adapters,
    load_finetuned,
    read_adapter_metadata,
)
from drivetl.models.checkpoint import read_checkpoint

#: Source class names with an obvious canonical meaning (lower-case keys).
CLASS_ALIASES: Mapping[str, str] = {
    "car": "vehicle",
    "truck": "vehicle",
    "bus": "vehicle",
    "van": "vehicle",
    "type_vehicle": "vehicle",
    "person": "pedestrian",
    "type_pedestrian": "pedestrian",
    "pedestrian": "pedestrian",
    "bicycle": "cyclist",
    "bicyclist": "cyclist",
    "type_cyclist": "cyclist",
    "type_sign": "sign",
    "traffic_sign": "sign",
}
_BASE_KEYS = ("pretrained", "base_checkpoint", "base", "pretrained_checkpoint", "ckpt")


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: `path` (checkpoint or adapter file), `base` (adapters only), `name`."""

    path: Path
    name: str
    base: Path | None = None

    @staticmethod
    def parse(text: str, name: str | None = None) -> ModelSpec:
        """``CKPT`` or ``ADAPTER.safetensors@BASE.ckpt``; the name defaults to the file's stem."""
        base = None
        path_text = text
        if "@" in text and not Path(text).exists():
            path_text, _, base_text = text.rpartition("@")
            base = Path(base_text)
        path = Path(path_text)
        return ModelSpec(path=path, name=name or _default_name(path), base=base)


def _default_name(path: Path) -> str:
    stem = path.stem
    if stem in ("last", "best", "model", "adapters", "finetuned", "pretrained") or stem.startswith("best-"):
        return f"{path.parent.parent.name if path.parent.name == 'checkpoints' else path.parent.name}/{stem}"
    return stem


@dataclass
class LoadedModel:
    """A detector ready for inference and what evaluation must know about it.

    classes: head classes in channel order; canonical: the canonical name of each (None: unmapped).
    columns: point columns the model takes; camera_names / image_size ((H, W)): its camera input,
    None for a LiDAR-only model. film: True when the model has FiLM adapters (conditioned on each
    batch's rig vectors by the adapted forward).
    """

    name: str
    model: torch.nn.Module
    classes: tuple[str, ...]
    canonical: tuple[str | None, ...]
    columns: tuple[str, ...]
    camera_names: tuple[str, ...] | None
    image_size: tuple[int, int] | None
    kind: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    film: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def has_camera(self) -> bool:
        """True for a model with a camera branch."""
        return getattr(self.model, "camera", None) is not None

    @property
    def batch_spec(self) -> BatchSpec:
        """The batches the model takes (its point columns, classes and camera input)."""
        cameras = self.has_camera
        return BatchSpec(
            columns=self.columns,
            classes=self.classes,
            image_size=self.image_size if cameras else None,
            camera_names=self.camera_names if cameras else (),
        )

    @property
    def point_range(self) -> tuple[float, ...]:
        """(x_min, y_min, z_min, x_max, y_max, z_max) metres of the LiDAR encoder's grid."""
        return tuple(float(v) for v in self.model.lidar.grid.point_range)


def canonical_classes(
    classes: Sequence[str], class_map: Mapping[str, str] | None = None
) -> tuple[str | None, ...]:
    """The canonical class of each head class name (None where it has none)."""
    class_map = dict(class_map or {})
    out: list[str | None] = []
    for c in classes:
        name = class_map.get(c, c)
        if name not in CLASSES:
            name = CLASS_ALIASES.get(str(name).lower())
        out.append(name)
    return tuple(out)


def _build_detector(meta: Mapping[str, Any], where: str) -> torch.nn.Module:
    spec = meta.get("detector")
    if spec is None:
        cfg = meta.get("config") or {}
        spec = cfg.get("detector") if isinstance(cfg, Mapping) else None
    if spec is None:
        raise CheckpointError(
            f"{where}: the checkpoint records no detector config (checkpoint['drivetl']['detector']); "
            "evaluate checkpoints written by `drivetl pretrain` or `drivetl finetune`"
        )
    return build_detector(spec, where, pretraining_heads=True)[0]


def _load_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], prefix: str, where: str) -> None:
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)} if prefix else dict(state)
    if not own:
        raise CheckpointError(f"{where}: no tensors under the prefix {prefix!r} the metadata names")
    target = model.state_dict()
    missing = sorted(set(target) - set(own))
    unexpected = sorted(set(own) - set(target))
    shapes = [k for k in set(own) & set(target) if tuple(own[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{where}: weights do not fit the detector rebuilt from its own config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {sorted(shapes)[:3]}); "
            "the file is damaged or was written by another drivetl version"
        )
    model.load_state_dict(own, strict=True)


def _meta_inputs(meta: Mapping[str, Any], model: torch.nn.Module) -> tuple:
    columns = tuple(meta.get("point_columns") or ())
    if not columns:
        enc = model.lidar
        columns = (
            ("x", "y", "z", "intensity", "elongation")
            if getattr(enc, "use_elongation", False)
            else ("x", "y", "z", "intensity")
        )
    cams = size = None
    if getattr(model, "camera", None) is not None:
        cams = tuple(meta.get("camera_names") or ()) or None
        s = meta.get("image_size")
        size = (int(s[0]), int(s[1])) if s else (96, 144)
    return columns, cams, size


def load_checkpoint_model(path: Path, name: str, class_map: Mapping[str, str] | None = None) -> LoadedModel:
    """A pretraining or fine-tuning checkpoint as a `LoadedModel`.

    Fine-tuning checkpoints are rebuilt by `drivetl.models.adapters.load_finetuned` (adapter recipe
    from the metadata); pretraining checkpoints from their stored detector config."""
    where = str(path)
    state, meta = read_checkpoint(path)
    if not meta or "classes" not in meta:
        raise CheckpointError(
            f"{where}: no drivetl metadata (checkpoint['drivetl']); evaluate checkpoints written by "
            "`drivetl pretrain` or `drivetl finetune`"
        )
    if meta.get("task") == "finetune":
        adapted = load_finetuned(path)
        loaded = _finish(adapted.detector, meta, name, "finetune", where, class_map)
        _adapter_note(loaded, meta.get("adapters") or {})
        return loaded
    model = _build_detector(meta, where)
    _load_state(model, state, str(meta.get("state_dict_prefix", "model.")), where)
    return _finish(model, meta, name, str(meta.get("task") or "pretrain"), where, class_map)


def _resolve_base(adapter: Path, header: Mapping[str, Any]) -> Path | None:
    user = header.get("metadata") or {}
    for key in _BASE_KEYS:
        value = user.get(key)
        if isinstance(value, str) and value:
            p = Path(value)
            for cand in [p] if p.is_absolute() else [adapter.parent / p, Path.cwd() / p]:
                if cand.is_file():
                    return cand
            return p
    return None


def load_adapter_model(
    path: Path, base: Path | None, name: str, class_map: Mapping[str, str] | None = None
) -> LoadedModel:
    """An adapter file applied on its base checkpoint (explicit `base`, or the one its metadata records).

    Files written by `drivetl finetune` are rebuilt with `drivetl.models.adapters.build_adapted`;
    other adapter files (no detector config in their metadata) are applied with `load_adapters` on
    the base checkpoint's own detector."""
    header = read_adapter_metadata(path)
    if base is None:
        base = _resolve_base(path, header)
        if base is None:
            raise CheckpointError(
                f"{path}: adapter file records no base checkpoint; name it as {path}@BASE.ckpt"
            )
    if not base.is_file():
        raise CheckpointError(
            f"{path}: base checkpoint {base} not found; name the pretrained checkpoint as {path}@BASE.ckpt"
        )
    state, meta = read_checkpoint(base)
    if not meta or "classes" not in meta:
        raise CheckpointError(f"{base}: no drivetl metadata; the adapters' base must be a drivetl checkpoint")
    user = dict(header.get("metadata") or {})
    merged = dict(meta)
    merged.update({"classes": list(user.get("classes") or meta["classes"]), "base": str(base)})
    if "detector" in user:
        model = build_adapted(base, path).detector
    else:
        model = _build_detector(meta, str(base))
        _load_state(model, state, str(meta.get("state_dict_prefix", "model.")), str(base))
        load_adapters(model, path)
    loaded = _finish(model, merged, name, "adapters", f"{path}@{base}", class_map)
    _adapter_note(loaded, header)
    return loaded


def _adapter_note(loaded: LoadedModel, info: Mapping[str, Any]) -> None:
    methods = info.get("methods") or ([info["method"]] if info.get("method") else [])
    total = info.get("total")
    share = (
        f"{info['trainable'] / total:.1%} of {total:,}"
        if info.get("trainable") is not None and total
        else "?"
    )
    loaded.notes.append(f"adapters: {', '.join(methods) or 'none'}, trainable parameters {share}")


def _finish(model, meta, name, kind, source, class_map) -> LoadedModel:
    model.eval()
    classes = tuple(str(c) for c in meta["classes"])
    canonical = canonical_classes(classes, class_map)
    columns, cams, size = _meta_inputs(meta, model)
    film = any(isinstance(m, StageWithFiLM) for m in model.modules())
    loaded = LoadedModel(
        name=name,
        model=model,
        classes=classes,
        canonical=canonical,
        columns=columns,
        camera_names=cams,
        image_size=size,
        kind=kind,
        source=source,
        meta=dict(meta),
        film=film,
    )
    unmapped = [c for c, k in zip(classes, canonical, strict=True) if k is None]
    if unmapped:
        loaded.notes.append(
            f"head classes {unmapped} have no canonical name; their predictions are not "
            "evaluated (pass --class-map NAME=vehicle)"
        )
    return loaded


def load_model(spec: ModelSpec, class_map: Mapping[str, str] | None = None) -> LoadedModel:
    """Load what `spec` names; CheckpointError naming the file when it cannot be evaluated."""
    path = spec.path
    if not path.exists():
        raise CheckpointError(
            f"{path}: checkpoint not found (pass a .ckpt from `drivetl pretrain`/"
            "`drivetl finetune`, or an adapter .safetensors)"
        )
    if path.is_dir():
        found = sorted(path.glob("**/last.ckpt")) or sorted(path.glob("**/*.ckpt"))
        if len(found) != 1:
            raise CheckpointError(f"{path}: is a folder with {len(found)} checkpoints; name one file")
        path = found[0]
    if path.suffix == ".safetensors":
        return load_adapter_model(path, spec.base, spec.name, class_map)
    if spec.base is not None:
        raise CheckpointError(f"{spec.path}: only an adapter file (.safetensors) takes @BASE")
    return load_checkpoint_model(path, spec.name, class_map)


def unique_names(specs: Sequence[ModelSpec]) -> list[ModelSpec]:
    """`specs` with repeated names made distinct (name, name-2, ...)."""
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        n = seen.get(s.name, 0) + 1
        seen[s.name] = n
        out.append(s if n == 1 else ModelSpec(s.path, f"{s.name}-{n}", s.base))
    return out
