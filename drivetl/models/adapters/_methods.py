"""The adapter methods of fine-tuning, in one table: how each adapts a detector, where, and what it exports.

`METHODS` maps a method name (``model.method`` of a fine-tune config) to a `Method`:

- ``apply(model, targets, spec)``: adapt `model` in place after the pretrained weights are loaded;
  returns the adapted module names;
- ``lidar_targets`` / ``camera_targets``: where it goes when the config names no targets (module-name
  globs of `BEVDetector`; the camera ones only when the detector has a camera branch);
- ``modules``: the adapter module classes it creates. Their ``recipe_entry()`` is written into an
  adapter file's recipe under ``kind`` = the method name, and ``from_recipe(target, entry, name)``
  rebuilds them (`drivetl.models.adapters._export`);
- ``reestimate_norms``: whether BatchNorm statistics are re-estimated on target frames by default.

A new method is one new file (its module class with ``recipe_entry``/``from_recipe``, and what
wraps a model with it) plus one row here; see docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from drivetl.calib.rig_vector import RIG_VECTOR_DIM
from drivetl.errors import ConfigError

from ._bottleneck import StageWithAdapter, insert_adapters
from ._film import StageWithFiLM, insert_film
from ._freeze import ParameterCount, apply_freezing
from ._lora import LORA_MODULES, apply_lora
from ._norm import DomainBatchNorm, convert_domain_norms, set_domain

__all__ = [
    "DOMAINS",
    "METHODS",
    "AdapterSpec",
    "Method",
    "apply_method",
    "default_targets",
    "freeze_model",
    "stage_names",
]

#: domain names of `DomainBatchNorm` layers: the pretrained (source) domain first
DOMAINS = ("source", "target")


@dataclass(frozen=True)
class AdapterSpec:
    """The adapter part of a fine-tune config (see docs/finetune.md).

    method: a name of `METHODS`. targets: module-name globs (None: the method's default targets).
    rank, alpha, dropout: LoRA. reduction: bottleneck width C // reduction. film_hidden: FiLM MLP
    width. freeze: adapters+head | last_k | full; last_k: stages trained by ``last_k``.
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


@dataclass(frozen=True)
class Method:
    """One row of `METHODS` (see the module docstring)."""

    apply: Callable[[nn.Module, list[str], AdapterSpec], list[str]]
    lidar_targets: tuple[str, ...] = ()
    camera_targets: tuple[str, ...] = ()
    modules: tuple[type[nn.Module], ...] = ()
    reestimate_norms: bool = False


def _nothing(model: nn.Module, targets: list[str], spec: AdapterSpec) -> list[str]:
    return []


def _domain_norm(model: nn.Module, targets: list[str], spec: AdapterSpec) -> list[str]:
    names = convert_domain_norms(model, DOMAINS, targets)
    set_domain(model, DOMAINS[-1])
    return names


METHODS: dict[str, Method] = {
    "lora": Method(
        apply=lambda m, t, s: apply_lora(m, t, rank=s.rank, alpha=s.alpha, dropout=s.dropout),
        lidar_targets=("lidar.backbone", "lidar.neck"),
        camera_targets=("camera.backbone.neck", "camera.mix", "fusion"),
        modules=LORA_MODULES,
    ),
    "bottleneck": Method(
        apply=lambda m, t, s: insert_adapters(m, t, reduction=s.reduction),
        lidar_targets=(r"re:lidar\.backbone\.stages\.\d+", "lidar.neck"),
        camera_targets=("camera.mix", "fusion"),
        modules=(StageWithAdapter,),
    ),
    "film": Method(
        apply=lambda m, t, s: insert_film(m, t, cond_dim=RIG_VECTOR_DIM, hidden=s.film_hidden),
        lidar_targets=("lidar.neck",),
        camera_targets=("camera.mix", "fusion"),
        modules=(StageWithFiLM,),
    ),
    "norm": Method(apply=_nothing, reestimate_norms=True),
    "domain_norm": Method(
        apply=_domain_norm,
        lidar_targets=("lidar.*",),
        camera_targets=("camera.*", "fusion.*"),
        modules=(DomainBatchNorm,),
        reestimate_norms=True,
    ),
    "none": Method(apply=_nothing),
}


def default_targets(model: nn.Module, method: str) -> list[str]:
    """Where `method` goes when the config names no targets (module-name globs of `BEVDetector`)."""
    row = METHODS[method]
    camera = getattr(model, "camera", None) is not None
    return [*row.lidar_targets, *(row.camera_targets if camera else ())]


def apply_method(model: nn.Module, spec: AdapterSpec) -> list[str]:
    """Apply `spec.method` to `model` in place (after the pretrained weights are loaded); returns
    the adapted module names."""
    targets = list(spec.targets) if spec.targets else default_targets(model, spec.method)
    return METHODS[spec.method].apply(model, targets, spec)


def stage_names(model: Any) -> list[str]:
    """Trainable stages of a `BEVDetector` in forward order for the ``last_k`` policy: LiDAR pillar
    net, backbone stages, neck; then the camera backbone and lift; then the fusion."""
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


def freeze_model(model: nn.Module, spec: AdapterSpec, loaded: Sequence[str] | None) -> ParameterCount:
    """Apply the freezing policy of `spec` to a `BEVDetector`; returns the `ParameterCount`.

    loaded: the pretrained tensors' keys that were loaded (None: nothing was). The head, and every
    top-level module that got no pretrained tensor (a randomly initialized part must train), count
    as head.
    """
    got = {k.split(".")[0] for k in loaded or ()}
    heads = ["head"]
    for name, child in model.named_children():
        if name != "head" and any(True for _ in child.parameters()) and name not in got:
            heads.append(name)
    return apply_freezing(
        model, spec.freeze, head_prefixes=heads, stage_names=stage_names(model), k=spec.last_k
    )
