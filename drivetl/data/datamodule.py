"""The training data module: source frames -> canonicalize -> augment -> collate, in worker processes.

Sources (``format``): ``"waymo"`` (a folder of Waymo v1 ``*.tfrecord`` files, read directly with
random access through a record index), ``"team"`` (a team-format folder with its ``rig.yaml``),
``"cache"`` (the training cache written by ``drivetl convert``), or ``"auto"`` (decided from what the
folder holds). Validation frames come from ``val_root`` or, without one, are the last
``val_fraction`` of the frames (in file order, so they are whole held-out stretches of driving).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from drivetl.data._tfrecord import masked_crc32c
from drivetl.data.augment import AugmentConfig, augment
from drivetl.data.collate import Batch, collate
from drivetl.data.records import CLASSES, FrameRecord, Sample
from drivetl.errors import DataError

__all__ = ["CollateFn", "DriveDataModule", "FrameDataset", "WaymoRecordIndex", "open_source"]

_HEADER = struct.Struct("<QI")


class WaymoRecordIndex:
    """Random access to the Frames of Waymo v1 TFRecord files: ``len``, ``[i] -> FrameRecord``.

    The index holds (file, byte offset) per record, found by walking the record headers once.
    """

    def __init__(self, files: Sequence[str | Path]):
        self.entries: list[tuple[str, int]] = []
        for path in files:
            size = Path(path).stat().st_size
            with open(path, "rb") as f:
                offset = 0
                while offset < size:
                    header = f.read(12)
                    if len(header) < 12:
                        raise DataError(
                            f"{path}: truncated record header at byte offset {offset}; "
                            "the file is damaged (re-copy it)"
                        )
                    length, _ = _HEADER.unpack(header)
                    self.entries.append((str(path), offset))
                    offset += 16 + length
                    f.seek(offset)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> FrameRecord:
        from drivetl.data.waymo import WaymoFrame, parse_frame

        path, offset = self.entries[i]
        where = f"{path}: record at byte offset {offset}"
        with open(path, "rb") as f:
            f.seek(offset)
            length, _ = _HEADER.unpack(f.read(12))
            data = f.read(length)
            footer = f.read(4)
        if len(data) < length or len(footer) < 4:
            raise DataError(f"{where}: truncated record; the file is damaged (re-copy it)")
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise DataError(f"{where}: data CRC mismatch; the file is damaged (re-copy it)")
        return WaymoFrame(parse_frame(data, where), where=where, threads=1).to_record()


def open_source(root: str | Path, fmt: str = "auto"):
    """A frame source over `root`: an object with ``len`` and ``[i] -> FrameRecord``."""
    root = Path(root)
    if not root.exists():
        raise DataError(
            f"{root}: data folder not found (set --data.root to a Waymo TFRecord folder, a team "
            "folder or a training cache)"
        )
    if fmt == "auto":
        if (root / "index.json").is_file():
            fmt = "cache"
        elif root.is_file() or any(root.rglob("*.tfrecord")):
            fmt = "waymo"
        elif (root / "rig.yaml").is_file():
            fmt = "team"
        else:
            raise DataError(
                f"{root}: neither a training cache (index.json), Waymo TFRecords (*.tfrecord) nor a "
                "team folder (rig.yaml); pass --data.format or point --data.root at the data"
            )
    if fmt == "waymo":
        files = [root] if root.is_file() else sorted(root.rglob("*.tfrecord"))
        if not files:
            raise DataError(f"{root}: no *.tfrecord files")
        return WaymoRecordIndex(files)
    if fmt == "team":
        from drivetl.data.team import TeamReader

        return TeamReader(root)
    if fmt == "cache":
        from drivetl.data.cache import TrainingCache

        return TrainingCache(root)
    raise DataError(f"data.format must be auto, waymo, team or cache; got {fmt!r}")


class FrameDataset(Dataset):
    """``[i] -> Sample``: reads frame ``indices[i]`` of a source, canonicalizes and (optionally) augments it.

    columns: point columns every sample gets, in order (an optional column a source lacks is zeros).
    """

    def __init__(
        self,
        source,
        indices: Sequence[int],
        *,
        columns: Sequence[str],
        cameras: bool,
        augment_config: AugmentConfig | None = None,
        seed: int = 0,
        lidars: Sequence[str] | None = None,
    ):
        self.source = source
        self.indices = list(indices)
        self.columns = tuple(columns)
        self.cameras = cameras
        self.augment_config = augment_config
        self.seed = seed
        self.lidars = list(lidars) if lidars else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        import dataclasses

        from drivetl.data.canonicalize import canonicalize

        record = self.source[self.indices[i]]
        sample = canonicalize(record, lidars=self.lidars, decode_images=self.cameras)
        cols = [
            sample.points[:, sample.columns.index(c)]
            if c in sample.columns
            else np.zeros(len(sample.points), np.float32)
            for c in self.columns
        ]
        sample = dataclasses.replace(
            sample, points=np.stack(cols, 1).astype(np.float32), columns=self.columns
        )
        if not self.cameras:
            sample = dataclasses.replace(sample, images={}, cameras=())
        if self.augment_config is not None:
            draw = int(torch.randint(0, 2**31 - 1, ()).item())  # seeded per worker and epoch by the loader
            sample = augment(
                sample, np.random.default_rng([self.seed, self.indices[i], draw]), self.augment_config
            )
        return sample


class CollateFn:
    """Picklable `collate` with fixed keyword arguments (for DataLoader worker processes)."""

    def __init__(self, camera_names, image_size, classes, columns):
        self.kwargs = {
            "camera_names": camera_names,
            "image_size": image_size,
            "classes": classes,
            "columns": columns,
        }

    def __call__(self, samples: list[Sample]) -> Batch:
        return collate(samples, **self.kwargs)


class DriveDataModule(pl.LightningDataModule):
    """Batches of canonical, augmented frames for training and validation.

    root: the data folder; format: auto | waymo | team | cache; val_root: a separate validation folder.
    val_fraction: share of `root`'s frames held out when there is no `val_root`.
    max_frames: use at most this many frames of `root` (None: all).
    image_size: (height, width) of the stacked camera images; None trains without cameras.
    camera_names: views in order (None: as the data lists them). classes: class names (head order).
    point_columns: point columns passed to the model. augment: `AugmentConfig` fields (None: off).
    lidars: which LiDARs to use (None: all). batch_size, num_workers, pin_memory (None: on with CUDA).
    """

    def __init__(
        self,
        root: str | None = None,
        format: Literal["auto", "waymo", "team", "cache"] = "auto",
        val_root: str | None = None,
        val_fraction: float = 0.1,
        max_frames: int | None = None,
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
        self.classes = tuple(classes) if classes else CLASSES
        self.columns = tuple(point_columns) if point_columns else ("x", "y", "z", "intensity")
        self.augment_config = AugmentConfig(**augment) if augment is not None else None
        self.train_set: FrameDataset | None = None
        self.val_set: FrameDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.train_set is not None:
            return
        if hp.root is None:
            raise DataError(
                "no data: set --data.root to a Waymo TFRecord folder, a team folder or a training cache"
            )
        source = open_source(hp.root, hp.format)
        n = len(source) if hp.max_frames is None else min(len(source), hp.max_frames)
        cams = hp.image_size is not None
        common = {"columns": self.columns, "cameras": cams, "seed": hp.seed, "lidars": hp.lidars}
        if hp.val_root is not None:
            val_source = open_source(hp.val_root, hp.format)
            train_idx, val_idx = list(range(n)), list(range(len(val_source)))
        else:
            val_source = source
            n_val = min(max(math.ceil(n * hp.val_fraction), 1), n - 1) if n > 1 else 0
            train_idx, val_idx = list(range(n - n_val)), list(range(n - n_val, n))
        if not train_idx:
            raise DataError(f"{hp.root}: no training frames (found {len(source)})")
        self.train_set = FrameDataset(source, train_idx, augment_config=self.augment_config, **common)
        self.val_set = FrameDataset(val_source, val_idx or train_idx[:1], augment_config=None, **common)

    def _loader(self, dataset: FrameDataset, shuffle: bool) -> DataLoader:
        hp = self.hparams
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        size = tuple(hp.image_size) if hp.image_size is not None else None
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            shuffle=shuffle,
            num_workers=hp.num_workers,
            collate_fn=CollateFn(hp.camera_names if size else (), size, self.classes, self.columns),
            pin_memory=pin,
            drop_last=shuffle and len(dataset) > hp.batch_size,
            persistent_workers=hp.num_workers > 0,
            prefetch_factor=4 if hp.num_workers > 0 else None,
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """`Batch.to` with ``non_blocking`` on CUDA (Lightning passes it only to plain tensors), so
        copies from the loader's pinned memory do not stall the host."""
        if isinstance(batch, Batch):
            return batch.to(device, non_blocking=torch.device(device).type == "cuda")
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
