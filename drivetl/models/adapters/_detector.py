"""An adapted detector: building it, its forward, and the two ways back to it from a fine-tuning run.

- `build_detector(spec, where)`: a `BEVDetector` from a checkpoint's ``class_path``/``init_args``
  config (for fine-tuning without the pretraining-only heads);
- `AdaptedDetector`: a `BEVDetector` with adapters; its forward (`adapted_forward`) conditions
  every FiLM stage on the batch's own rig vectors (``batch.rig_vectors``), so a model with any
  adapter method runs on a `Batch` like a plain one;
- `load_finetuned(ckpt)`: a full fine-tune checkpoint alone (it stores the detector config and the
  adapter recipe in ``checkpoint["drivetl"]``);
- `build_adapted(pretrained_ckpt, adapter_file)`: the pretrained checkpoint plus the small adapter
  file written by `save_adapters` (its metadata holds what is needed to rebuild the model).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from drivetl.data.collate import Batch
from drivetl.errors import CheckpointError, ConfigError
from drivetl.models.build import instantiate
from drivetl.models.checkpoint import ARCH, load_pretrained, read_checkpoint
from drivetl.models.detector import BEVDetector, DetectorOutputs

from ._export import apply_recipe, load_adapters, read_adapter_metadata
from ._film import film_condition

__all__ = ["AdaptedDetector", "adapted_forward", "build_adapted", "build_detector", "load_finetuned"]


def build_detector(
    spec: Mapping[str, Any],
    where: str,
    *,
    classes: Sequence[str] | None = None,
    pretraining_heads: bool = False,
) -> tuple[BEVDetector, dict]:
    """Build a `BEVDetector` from a ``class_path``/``init_args`` config (a checkpoint's, usually).

    classes: the head's classes (None keeps the config's). pretraining_heads: keep the masked
    occupancy and camera->LiDAR heads (False for fine-tuning, which leaves them out). Returns
    (detector, the config actually built); CheckpointError naming `where` when the config does not
    build a `BEVDetector`.
    """
    spec = copy.deepcopy(dict(spec))
    if spec.get("class_path") != ARCH:
        raise CheckpointError(
            f"{where}: detector class_path is {spec.get('class_path')!r}, expected {ARCH!r}"
        )
    args = dict(spec.get("init_args") or {})
    if classes is not None:
        if not classes or len(set(classes)) != len(classes):
            raise ConfigError(f"model.classes must be distinct and non-empty, got {list(classes)}")
        args["classes"] = [str(c) for c in classes]
    if not pretraining_heads:
        args["occupancy_head"] = False
        args["align_head"] = False
    spec["init_args"] = args
    try:
        model = instantiate(spec, f"{where}: detector")
    except ConfigError as exc:
        raise CheckpointError(f"{where}: cannot build the detector from its config ({exc})") from None
    return model, spec


def adapted_forward(model: nn.Module, batch: Batch, **kwargs: Any) -> DetectorOutputs:
    """``model(batch)`` with every FiLM stage conditioned on ``batch.rig_vectors`` (one per frame)."""
    with film_condition(batch.rig_vectors):
        return model(batch, **kwargs)


class AdaptedDetector(nn.Module):
    """A fine-tuned `BEVDetector` (``.detector``) with the metadata it was saved with.

    ``forward(batch)`` is `adapted_forward`: `DetectorOutputs`, FiLM stages conditioned on the
    batch's rig vectors. metadata: the checkpoint's or adapter file's description of the run.
    """

    def __init__(self, detector: BEVDetector, metadata: Mapping[str, Any] | None = None):
        super().__init__()
        self.detector = detector
        self.metadata = dict(metadata or {})

    @property
    def classes(self) -> tuple[str, ...]:
        """Head classes, in channel order."""
        return self.detector.classes

    def forward(self, batch: Batch, **kwargs: Any) -> DetectorOutputs:
        """`adapted_forward` of the detector on `batch`."""
        return adapted_forward(self.detector, batch, **kwargs)


def load_finetuned(path: str | os.PathLike) -> AdaptedDetector:
    """Rebuild the adapted detector of a fine-tune checkpoint (``finetuned.ckpt`` or one under
    ``checkpoints/``) without the pretrained checkpoint; weights-only loading."""
    state, meta = read_checkpoint(path)
    if not meta or meta.get("task") != "finetune" or "adapters" not in meta:
        raise CheckpointError(
            f"{path}: not a fine-tune checkpoint (no 'drivetl' metadata with task 'finetune'); "
            "for a pretrained checkpoint use build_adapted(pretrained, adapter_file) or fine-tune it first"
        )
    detector, _ = build_detector(meta["detector"], str(path))
    apply_recipe(detector, meta["adapters"]["recipe"], where=str(path))
    prefix = meta.get("state_dict_prefix", "model.")
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    result = detector.load_state_dict(own, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: tensors do not fit the model its metadata describes "
            f"(missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}); the file is damaged or was edited"
        )
    detector.eval()
    return AdaptedDetector(detector, meta)


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
    detector, _ = build_detector(md["detector"], str(adapter_file), classes=md.get("classes"))
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
    return AdaptedDetector(detector, md)
