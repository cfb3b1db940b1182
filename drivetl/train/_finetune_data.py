"""Fine-tuning data: a team's fleet folder (labeled subset, unlabeled rest, declared validation split),
optionally mixed with source frames brought towards the target rig.

Every frame goes through the rig-driven `drivetl.data.canonicalize.canonicalize` (the same step as
pretraining). Which frames are used:

- training frames: split `train_split` of a team folder (all frames when the folder has no such
  split, minus the held-out validation frames);
- labeled frames: a seeded `labeled_fraction` of the training frames, or exactly the frame ids
  listed in `labeled_split_file` (``segment/timestamp_us`` per line, the team split-file format);
  the others are unlabeled (their boxes are never read into a batch) and feed self-training;
- validation frames: split `val_split` (a small, declared, labeled split), or, when the folder has
  none, the last `val_fraction` of the training frames. The ``test`` split is never touched.
- source frames (`source_root`, optional): labeled source-domain frames added to the labeled set,
  canonicalized with the target LiDAR's beam pattern (`source_beam_resample`) and an SN-style size
  shift towards the target's labeled box statistics (`source_size_shift`).

Point columns, class list, camera names and image size default to what the pretrained checkpoint
records (the module's metadata), so the batches fit the pretrained encoders.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from drivetl._io import atomic_write_text
from drivetl.data.augment import AugmentConfig, augment
from drivetl.data.collate import Batch, collate
from drivetl.data.records import CLASSES, Boxes, FrameKey, Sample
from drivetl.errors import ConfigError, DataError

__all__ = ["FinetuneDataModule"]


def _main_lidar(rig):
    """The rig's main LiDAR: ``TOP``, else the one with the most beams (None without LiDARs)."""
    if not rig.lidars:
        return None
    for lidar in rig.lidars:
        if lidar.name == "TOP":
            return lidar
    return max(rig.lidars, key=lambda m: len(m.inclinations))


def _read_ids(path: Path) -> list[FrameKey]:
    if not path.is_file():
        raise ConfigError(f"{path}: labeled split file not found (one `segment/timestamp_us` per line)")
    keys = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        seg, _, ts = line.rpartition("/")
        if not seg or not ts.isdigit():
            raise ConfigError(f"{path}:{n}: {line!r} is not a frame id `segment/timestamp_us`")
        keys.append(FrameKey(seg, int(ts)))
    return keys


class _Frames(Dataset):
    """``[i] -> Sample`` over (reader, index, labeled, canonicalize options) items."""

    def __init__(
        self,
        items: list[tuple[Any, int, bool, dict]],
        *,
        columns: Sequence[str],
        cameras: bool,
        lidars: Sequence[str] | None,
        augment_config: AugmentConfig | None,
        seed: int,
    ):
        self.items = items
        self.columns = tuple(columns)
        self.cameras = cameras
        self.lidars = list(lidars) if lidars else None
        self.augment_config = augment_config
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        from drivetl.data.canonicalize import canonicalize

        reader, index, labeled, options = self.items[i]
        record = reader[index]
        sample = canonicalize(record, lidars=self.lidars, decode_images=self.cameras, **options)
        cols = [
            sample.points[:, sample.columns.index(c)]
            if c in sample.columns
            else np.zeros(len(sample.points), np.float32)
            for c in self.columns
        ]
        changes: dict[str, Any] = {"points": np.stack(cols, 1).astype(np.float32), "columns": self.columns}
        if not labeled:
            changes["boxes"] = Boxes.empty()
        if not self.cameras:
            changes.update(images={}, cameras=())
        sample = dataclasses.replace(sample, **changes)
        if self.augment_config is not None:
            draw = int(torch.randint(0, 2**31 - 1, ()).item())  # seeded per worker and epoch by the loader
            sample = augment(sample, np.random.default_rng([self.seed, i, draw]), self.augment_config)
        return sample


class _Collate:
    """Picklable collate function for worker processes."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __call__(self, samples: list[Sample]) -> Batch:
        return collate(samples, **self.kwargs)


class FinetuneDataModule(pl.LightningDataModule):
    """Batches of canonical target frames (+ optional source frames) for fine-tuning.

    root: the fleet folder (team format, or anything `open_source` reads); format: auto/team/waymo/cache.
    train_split / val_split: team split names (see the module docstring); val_fraction: held out when
    the folder has no `val_split`. labeled_fraction: seeded share of training frames whose labels are
    used; labeled_split_file: frame ids to use as labeled instead. unlabeled_split: a team split of
    extra label-free frames for self-training. max_frames: cap on training frames.
    source_root / source_format / source_max_frames / source_beam_resample / source_size_shift: the
    optional source frames. image_size, camera_names, classes, point_columns: None = as the
    pretrained checkpoint records. augment: `AugmentConfig` fields (None: off). lidars: LiDARs used.
    norm_batches_size: batch size of the BatchNorm re-estimation loader (None: batch_size).
    """

    def __init__(
        self,
        root: str | None = None,
        format: Literal["auto", "team", "waymo", "cache"] = "auto",
        train_split: str | None = "train",
        val_split: str | None = "val",
        val_fraction: float = 0.1,
        labeled_fraction: float = 1.0,
        labeled_split_file: str | None = None,
        unlabeled_split: str | None = None,
        max_frames: int | None = None,
        source_root: str | None = None,
        source_format: Literal["auto", "team", "waymo", "cache"] = "auto",
        source_max_frames: int | None = None,
        source_beam_resample: bool = True,
        source_size_shift: bool = False,
        image_size: tuple[int, int] | None = None,
        camera_names: list[str] | None = None,
        classes: list[str] | None = None,
        point_columns: list[str] | None = None,
        augment: dict[str, Any] | None = None,
        lidars: list[str] | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not 0.0 < labeled_fraction <= 1.0:
            raise ConfigError(f"data.labeled_fraction must lie in (0, 1], got {labeled_fraction}")
        self.augment_config = AugmentConfig(**augment) if augment is not None else None
        self.rigs: dict[str, Any] = {}
        self.target_rig = None
        self.labeled_keys: list[FrameKey] = []
        self.labeled_indices: list[int] = []
        self.source_options: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self._sets: dict[str, _Frames] = {}

    # ------------------------------------------------------------------ what the model expects
    def _model_meta(self) -> dict:
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        return dict(getattr(module, "data_defaults", {}) or {})

    def _settings(self) -> dict:
        hp, meta = self.hparams, self._model_meta()
        size = hp.image_size if hp.image_size is not None else meta.get("image_size")
        return {
            "classes": tuple(hp.classes or meta.get("classes") or CLASSES),
            "columns": tuple(hp.point_columns or meta.get("point_columns") or ("x", "y", "z", "intensity")),
            "image_size": tuple(size) if size else None,
            "camera_names": hp.camera_names if hp.camera_names is not None else meta.get("camera_names"),
        }

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self._sets:
            return
        from drivetl.data.datamodule import open_source

        hp = self.hparams
        if hp.root is None:
            raise DataError("no fleet data: set --data.root to the team folder to fine-tune on")
        target = open_source(hp.root, hp.format)
        self.target_rig = getattr(target, "rig", None) or target[0].rig
        self.rigs[self.target_rig.name] = self.target_rig
        splits = set(target.splits()) if hasattr(target, "splits") else set()
        train = target.split(hp.train_split) if hp.train_split in splits else target
        if hp.max_frames is not None:
            train = _subset(train, range(min(len(train), hp.max_frames)))
        if hp.val_split in splits:
            val = target.split(hp.val_split)
            val_keys = set(getattr(val, "keys", []))
            train_idx = [i for i in range(len(train)) if _key(train, i) not in val_keys]
        else:
            n = len(train)
            n_val = min(max(math.ceil(n * hp.val_fraction), 1), n - 1) if n > 1 else 0
            val, train_idx = _subset(train, range(n - n_val, n)), list(range(n - n_val))
        if not train_idx:
            raise DataError(f"{hp.root}: no training frames (found {len(train)}, validation {len(val)})")
        labeled_idx = self._pick_labeled(train, train_idx)
        unlabeled_idx = [i for i in train_idx if i not in set(labeled_idx)]
        extra_unlabeled: list[tuple[Any, int]] = []
        if hp.unlabeled_split is not None:
            if hp.unlabeled_split not in splits:
                raise DataError(
                    f"{hp.root}: no split {hp.unlabeled_split!r} for data.unlabeled_split "
                    f"(have {sorted(splits)})"
                )
            u = target.split(hp.unlabeled_split)
            extra_unlabeled = [(u, i) for i in range(len(u))]
        self.labeled_keys = [_key(train, i) for i in labeled_idx] if _has_keys(train) else []
        self.labeled_indices = list(labeled_idx)

        labeled = [(train, i, True, {}) for i in labeled_idx]
        labeled += self._source_items(target, labeled_idx, train)
        unlabeled = [(train, i, False, {}) for i in unlabeled_idx] + [
            (r, i, False, {}) for r, i in extra_unlabeled
        ]
        s = self._settings()
        common = {
            "columns": s["columns"],
            "cameras": s["image_size"] is not None,
            "lidars": hp.lidars,
            "seed": hp.seed,
        }
        self._sets = {
            "labeled": _Frames(labeled, augment_config=self.augment_config, **common),
            "unlabeled": _Frames(unlabeled, augment_config=self.augment_config, **common),
            "val": _Frames([(val, i, True, {}) for i in range(len(val))], augment_config=None, **common),
            "norm": _Frames(
                [(train, i, False, {}) for i in train_idx] + [(r, i, False, {}) for r, i in extra_unlabeled],
                augment_config=None,
                **common,
            ),
        }
        self.counts = {k: len(v) for k, v in self._sets.items()}
        self.counts["source"] = len(labeled) - len(labeled_idx)
        self._write_labeled_list()

    def _pick_labeled(self, train, train_idx: list[int]) -> list[int]:
        hp = self.hparams
        if hp.labeled_split_file is not None:
            wanted = set(_read_ids(Path(hp.labeled_split_file)))
            idx = [i for i in train_idx if _key(train, i) in wanted]
            if not idx:
                raise ConfigError(
                    f"{hp.labeled_split_file}: none of its frame ids is a training frame of {hp.root}"
                )
            return idx
        n = max(1, round(hp.labeled_fraction * len(train_idx)))
        rng = np.random.default_rng(hp.seed)
        return sorted(train_idx[j] for j in rng.choice(len(train_idx), n, replace=False))

    def _source_items(self, target, labeled_idx: list[int], train) -> list[tuple[Any, int, bool, dict]]:
        hp = self.hparams
        if hp.source_root is None:
            return []
        from drivetl.data.canonicalize import size_shift_between, size_statistics
        from drivetl.data.datamodule import open_source

        source = open_source(hp.source_root, hp.source_format)
        n = len(source) if hp.source_max_frames is None else min(len(source), hp.source_max_frames)
        src_rig = getattr(source, "rig", None) or source[0].rig
        self.rigs[src_rig.name] = src_rig
        options: dict[str, Any] = {}
        main = _main_lidar(self.target_rig)
        if hp.source_beam_resample and main is not None:
            options["target_beams"] = main
        if hp.source_size_shift:
            probe = range(0, n, max(1, n // 200))
            src_stats = size_statistics(source[i] for i in probe)
            tgt_stats = size_statistics(train[i] for i in labeled_idx)
            options["size_shift"] = {
                c: [float(x) for x in v] for c, v in size_shift_between(src_stats, tgt_stats).items()
            }
        self.source_options = options
        return [(source, i, True, options) for i in range(n)]

    def _write_labeled_list(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.is_global_zero:
            return
        path = Path(trainer.default_root_dir) / "labeled_frames.txt"
        if self.labeled_keys:
            text = "".join(f"{k.segment}/{k.timestamp_us}\n" for k in self.labeled_keys)
        else:
            text = "# training-frame indices (the source has no frame ids)\n" + "".join(
                f"{i}\n" for i in self.labeled_indices
            )
        atomic_write_text(path, text)

    # ------------------------------------------------------------------ loaders
    def _loader(self, name: str, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        hp, s = self.hparams, self._settings()
        data = self._sets[name]
        bs = batch_size or hp.batch_size
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        size = s["image_size"]
        cams = (s["camera_names"] if s["camera_names"] is not None else None) if size else ()
        return DataLoader(
            data,
            batch_size=bs,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            collate_fn=_Collate(
                camera_names=cams, image_size=size, classes=s["classes"], columns=s["columns"]
            ),
            pin_memory=pin,
            drop_last=shuffle and len(data) > bs,
            persistent_workers=hp.num_workers > 0,
            prefetch_factor=4 if hp.num_workers > 0 else None,
        )

    def wants_unlabeled(self) -> bool:
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        return bool(getattr(module, "uses_unlabeled", False))

    def train_dataloader(self):
        labeled = self._loader("labeled", shuffle=True)
        if not self.wants_unlabeled():
            return labeled
        if not len(self._sets["unlabeled"]):
            raise ConfigError(
                f"{self.hparams.root}: self-training needs unlabeled frames; set data.labeled_fraction < 1, "
                "data.labeled_split_file or data.unlabeled_split"
            )
        return {"labeled": labeled, "unlabeled": self._loader("unlabeled", shuffle=True)}

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def norm_dataloader(self) -> DataLoader:
        """Every target training frame (labeled or not), un-augmented, in order: BatchNorm re-estimation."""
        return self._loader("norm", shuffle=False)


class _Subset:
    """A reader restricted to some of its indices (``len``, ``[i]``, ``keys``)."""

    def __init__(self, reader, indices):
        self.reader = reader
        self.indices = list(indices)
        keys = getattr(reader, "keys", None)
        self.keys = [keys[i] for i in self.indices] if isinstance(keys, list) else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.reader[self.indices[i]]


def _subset(reader, indices) -> _Subset:
    return _Subset(reader, indices)


def _has_keys(reader) -> bool:
    return isinstance(getattr(reader, "keys", None), list)


def _key(reader, i: int) -> FrameKey:
    keys = getattr(reader, "keys", None)
    if isinstance(keys, list):
        return keys[i]
    return reader[i].key
