"""Building the fine-tune model: the pretrained architecture + weights, an adapter method, a freezing policy.

Also the two ways back from a fine-tuning run to a model (for evaluation and demos):

- `load_finetuned(ckpt)`: a full fine-tune checkpoint alone (it stores the detector config and the
  adapter recipe in ``checkpoint["drivetl"]``);
- `build_adapted(pretrained_ckpt, adapter_file)`: the pretrained checkpoint plus the small adapter
  file written by `save_adapters` (its metadata holds what is needed to rebuild the model).

Both return an `AdaptedDetector`, a `BEVDetector` plus the rig vectors its FiLM layers need.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from drivetl.data.collate import Batch
from drivetl.errors import CheckpointError, ConfigError
from drivetl.models import BEVDetector, instantiate
from drivetl.models.adapters import (
    RigEmbedding,
    StageWithFiLM,
    apply_freezing,
    apply_lora,
    apply_recipe,
    convert_domain_norms,
    film_condition,
    insert_adapters,
    insert_film,
    load_adapters,
    read_adapter_metadata,
    set_domain,
)
from drivetl.models.checkpoint import LoadReport, load_pretrained, read_checkpoint
from drivetl.train.pretrain import ARCH  # the architecture pretrain and fine-tune checkpoints record

__all__ = [
    "ARCH",
    "METHODS",
    "AdaptedDetector",
    "AdapterSpec",
    "apply_method",
    "build_adapted",
    "build_detector",
    "default_targets",
    "freeze_model",
    "load_finetuned",
    "stage_names",
]

Method = Literal["lora", "bottleneck", "film", "norm", "domain_norm", "none"]
METHODS: tuple[str, ...] = ("lora", "bottleneck", "film", "norm", "domain_norm", "none")
#: domain names of `DomainBatchNorm` layers: the pretrained (source) domain first
DOMAINS = ("source", "target")


def build_detector(
    detector: Mapping[str, Any], classes: Sequence[str] | None, where: str
) -> tuple[BEVDetector, dict]:
    """Build the fine-tune detector from a pretraining ``class_path``/``init_args`` config.

    classes: the head's classes (None keeps the config's). The pretraining-only heads (masked
    occupancy, camera->LiDAR alignment) are left out. Returns (detector, the config actually built).
    """
    spec = copy.deepcopy(dict(detector))
    if spec.get("class_path") != ARCH:
        raise CheckpointError(
            f"{where}: detector class_path is {spec.get('class_path')!r}, expected {ARCH!r}"
        )
    args = dict(spec.get("init_args") or {})
    if classes is not None:
        if not classes or len(set(classes)) != len(classes):
            raise ConfigError(f"model.classes must be distinct and non-empty, got {list(classes)}")
        args["classes"] = [str(c) for c in classes]
    args["occupancy_head"] = False
    args["align_head"] = False
    spec["init_args"] = args
    model = instantiate(spec, "model.detector")
    if not isinstance(model, BEVDetector):
        raise ConfigError(f"{where}: the detector config builds {type(model).__name__}, not a BEVDetector")
    return model, spec


def stage_names(model: BEVDetector) -> list[str]:
    """Trainable stages in forward order for the ``last_k`` policy: LiDAR pillar net, backbone stages,
    neck; then the camera backbone and lift; then the fusion."""
    names = ["lidar.pfn"] + [f"lidar.backbone.stages.{i}" for i in range(len(model.lidar.backbone.stages))]
    names.append("lidar.neck")
    if model.camera is not None:
        bb = model.camera.backbone
        if getattr(bb, "timm", None) is not None:
            names.append("camera.backbone")
        else:
            names += ["camera.backbone.stem"]
            names += [f"camera.backbone.stages.stages.{i}" for i in range(len(bb.stages.stages))]
            names.append("camera.backbone.neck")
        names.append("camera.mix")
    if model.fusion is not None:
        names.append("fusion")
    return names


def default_targets(model: BEVDetector, method: str) -> list[str]:
    """Where each method goes when the config names no targets (module-name globs of `BEVDetector`)."""
    cam = model.camera is not None
    match method:
        case "lora":
            return ["lidar.backbone", "lidar.neck"] + (
                ["camera.backbone.neck", "camera.mix", "fusion"] if cam else []
            )
        case "bottleneck":
            return [r"re:lidar\.backbone\.stages\.\d+", "lidar.neck"] + (
                ["camera.mix", "fusion"] if cam else []
            )
        case "film":
            return ["lidar.neck"] + (["camera.mix", "fusion"] if cam else [])
        case "domain_norm":
            return ["lidar.*"] + (["camera.*", "fusion.*"] if cam else [])
    return []


@dataclass(frozen=True)
class AdapterSpec:
    """The adapter part of a fine-tune config (see docs/finetune.md).

    method: lora | bottleneck | film | norm | domain_norm | none. targets: module-name globs (None:
    `default_targets`). rank, alpha, dropout: LoRA. reduction: bottleneck width C // reduction.
    film_hidden: FiLM MLP width. freeze: adapters+head | last_k | full; last_k: stages trained by
    ``last_k``.
    """

    method: str = "lora"
    targets: tuple[str, ...] | None = None
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    reduction: int = 4
    film_hidden: int = 64
    freeze: str = "adapters+head"
    last_k: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"model.method: unknown {self.method!r}; choose one of {', '.join(METHODS)}")


def apply_method(model: BEVDetector, spec: AdapterSpec) -> list[str]:
    """Apply `spec.method` to `model` in place (after the pretrained weights are loaded); returns
    the adapted module names."""
    targets = list(spec.targets) if spec.targets else default_targets(model, spec.method)
    match spec.method:
        case "lora":
            return apply_lora(model, targets, rank=spec.rank, alpha=spec.alpha, dropout=spec.dropout)
        case "bottleneck":
            return insert_adapters(model, targets, reduction=spec.reduction)
        case "film":
            return insert_film(model, targets, cond_dim=RigEmbedding.dim, hidden=spec.film_hidden)
        case "domain_norm":
            names = convert_domain_norms(model, DOMAINS, targets)
            set_domain(model, DOMAINS[-1])
            return names
    return []


def freeze_model(model: BEVDetector, spec: AdapterSpec, report: LoadReport | None):
    """Apply the freezing policy; the head, and every top-level module that got no pretrained tensor
    (a randomly initialized part must train), count as head. Returns the `ParameterCount`."""
    loaded = {k.split(".")[0] for k in (report.loaded + report.class_mapped)} if report else set()
    heads = ["head"]
    for name, child in model.named_children():
        if name != "head" and any(True for _ in child.parameters()) and name not in loaded:
            heads.append(name)
    return apply_freezing(
        model, spec.freeze, head_prefixes=heads, stage_names=stage_names(model), k=spec.last_k
    )


def rig_vector(rig) -> list[float]:
    """The `RigEmbedding` vector of a `SensorRig`, as plain floats."""
    return [float(v) for v in RigEmbedding()(rig)[0].tolist()]


def has_film(model: nn.Module) -> bool:
    return any(isinstance(m, StageWithFiLM) for m in model.modules())


def forward_adapted(model: BEVDetector, batch: Batch, rig_vectors: Mapping[str, Sequence[float]], **kwargs):
    """``model(batch)``, inside `film_condition` with each frame's rig vector when the model has FiLM."""
    if not has_film(model):
        return model(batch, **kwargs)
    missing = sorted({r for r in batch.rig_names if r not in rig_vectors})
    if missing:
        raise ConfigError(
            f"FiLM adapters need the rig of every frame; no rig vector for {missing} (known: "
            f"{sorted(rig_vectors)}); call AdaptedDetector.add_rig(rig) with that rig first"
        )
    ref = next(model.parameters())
    cond = torch.tensor(
        [list(rig_vectors[r]) for r in batch.rig_names], dtype=torch.float32, device=ref.device
    )
    with film_condition(model, cond):
        return model(batch, **kwargs)


class AdaptedDetector(nn.Module):
    """A fine-tuned `BEVDetector` (``.detector``) and the rig vectors (name -> `RigEmbedding` vector)
    its FiLM adapters are conditioned on. ``forward(batch)`` returns `DetectorOutputs`."""

    def __init__(
        self,
        detector: BEVDetector,
        rig_vectors: Mapping[str, Sequence[float]] | None = None,
        metadata: dict | None = None,
    ):
        super().__init__()
        self.detector = detector
        self.rig_vectors = {str(k): [float(x) for x in v] for k, v in (rig_vectors or {}).items()}
        self.metadata = dict(metadata or {})

    @property
    def classes(self) -> tuple[str, ...]:
        return self.detector.classes

    def add_rig(self, rig) -> None:
        """Make frames of `rig` (a `SensorRig`, matched by `rig.name`) runnable through FiLM adapters."""
        self.rig_vectors[rig.name] = rig_vector(rig)

    def forward(self, batch: Batch, **kwargs):
        return forward_adapted(self.detector, batch, self.rig_vectors, **kwargs)


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_finetuned(path: str | os.PathLike) -> AdaptedDetector:
    """Rebuild the adapted detector of a fine-tune checkpoint (``finetuned.ckpt`` or one under
    ``checkpoints/``) without the pretrained checkpoint; weights-only loading."""
    state, meta = read_checkpoint(path)
    if not meta or meta.get("task") != "finetune" or "adapters" not in meta:
        raise CheckpointError(
            f"{path}: not a fine-tune checkpoint (no 'drivetl' metadata with task 'finetune'); "
            "for a pretrained checkpoint use build_adapted(pretrained, adapter_file) or fine-tune it first"
        )
    detector, _ = build_detector(meta["detector"], None, str(path))
    apply_recipe(detector, meta["adapters"]["recipe"], where=str(path))
    own = _strip(state, meta.get("state_dict_prefix", "model."))
    result = detector.load_state_dict(own, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: tensors do not fit the model its metadata describes "
            f"(missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}); the file is damaged or was edited"
        )
    detector.eval()
    return AdaptedDetector(detector, meta.get("rig_vectors") or {}, meta)


def build_adapted(pretrained: str | os.PathLike, adapter_file: str | os.PathLike) -> AdaptedDetector:
    """The pretrained checkpoint + an adapter file from `drivetl finetune` -> the fine-tuned detector.

    Rebuilds the detector from the adapter file's metadata (detector config, classes), loads the
    pretrained tensors the run loaded, then `load_adapters` (which checks the architecture signature
    and that the pretrained weights are the ones the adapters were trained on).
    """
    header = read_adapter_metadata(adapter_file)
    md = header.get("metadata") or {}
    if "detector" not in md:
        raise CheckpointError(
            f"{adapter_file}: adapter metadata has no detector config; not written by drivetl finetune"
        )
    detector, _ = build_detector(md["detector"], md.get("classes"), str(adapter_file))
    if md.get("include") != []:  # an empty include: the run trained from scratch, every tensor is in the file
        load_pretrained(
            detector,
            pretrained,
            include=md.get("include"),
            arch=ARCH,
            classes=md.get("classes"),
            class_map=md.get("class_map") or None,
            print_fn=None,
        )
    load_adapters(detector, adapter_file)
    detector.eval()
    return AdaptedDetector(detector, md.get("rig_vectors") or {}, md)
