"""The one sample pipeline: frames of a source -> canonical `Sample`s -> `Batch`es (hops 1 to 3 of DESIGN.md).

Pretraining, fine-tuning, evaluation and prediction build their batches with this module; what
differs between them is a parameter:

- `BatchSpec`: which point columns, box classes, camera views and image size a batch holds (what
  the model takes);
- `FrameSet`: frames of one source read the same way (which indices, labeled or not, options of
  `canonicalize` such as beam re-sampling or a size shift);
- `FrameDataset`: ``[i] -> Sample`` over one or more FrameSets: reads the record, canonicalizes it
  with its own rig (the rig vector comes along), keeps the spec's point columns (an optional column
  a source lacks is zeros), drops the images unless the spec has cameras and the boxes of unlabeled
  frames, pastes objects of other training frames into labeled ones (`drivetl.data.paste`, when
  given a bank) and augments;
- `Collate`: the picklable `collate` of a spec, for DataLoader worker processes;
- `open_source(root, format)`: a frame source (``len``, ``[i] -> FrameRecord``) over a folder.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from drivetl._io import single_threaded_blas
from drivetl.calib.rig_vector import main_lidar
from drivetl.data.augment import AugmentConfig, augment
from drivetl.data.cache import TrainingCache
from drivetl.data.canonicalize import canonicalize
from drivetl.data.collate import Batch, collate
from drivetl.data.formats.team import TeamReader
from drivetl.data.formats.waymo import WaymoRecordIndex, WaymoV2RecordIndex, is_v2_folder
from drivetl.data.paste import ObjectBank, PasteConfig, paste_objects
from drivetl.data.records import CLASSES, Boxes, FrameRecord, Sample
from drivetl.data.sampling import SampleIndex
from drivetl.errors import DataError, one_line

_log = logging.getLogger(__name__)

__all__ = ["BatchSpec", "Collate", "FrameDataset", "FrameSet", "held_out", "open_source"]

#: point columns of a batch when nothing else is asked for
BASE_COLUMNS: tuple[str, ...] = ("x", "y", "z", "intensity")


@dataclass(frozen=True)
class BatchSpec:
    """What a `Batch` holds: point columns (in order), box classes (head order), cameras.

    image_size: (height, width) of the stacked camera images; None: a LiDAR-only batch (no camera
    is decoded). camera_names: the views in order; None: every camera of the data, first-seen order.
    """

    columns: tuple[str, ...] = BASE_COLUMNS
    classes: tuple[str, ...] = CLASSES
    image_size: tuple[int, int] | None = None
    camera_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        if self.camera_names is not None:
            object.__setattr__(self, "camera_names", tuple(self.camera_names))

    @property
    def cameras(self) -> bool:
        """True when batches carry camera images."""
        return self.image_size is not None

    def merged(self, **given: Any) -> BatchSpec:
        """This spec with the fields given (not None) replaced: ``spec.merged(classes=["car"])``."""
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def collate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `collate` for this spec."""
        return {
            "camera_names": self.camera_names if self.cameras else (),
            "image_size": self.image_size,
            "classes": self.classes,
            "columns": self.columns,
        }


@dataclass(frozen=True)
class FrameSet:
    """Frames of one source, read the same way.

    source: ``len`` and ``[i] -> FrameRecord`` (a reader, the training cache, a subset).
    indices: the frames of `source` used, in order. labeled: False drops the frames' boxes (their
    labels never reach a batch). options: keyword arguments of `canonicalize` (``target_beams``,
    ``size_shift``).
    """

    source: Any
    indices: Sequence[int]
    labeled: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


class FrameDataset(Dataset):
    """``[i] -> Sample`` over the frames of `sets`, in order (see the module docstring).

    spec: the batch spec (columns kept, cameras decoded or not). augment: `AugmentConfig` (None:
    off). The item is a frame index, or a `SampleIndex(index, epoch)` (what the training sampler
    `EpochSampler` yields): frame i of epoch e is augmented with ``np.random.default_rng([seed, e,
    i])``, the same in any worker process and in a resumed run; a bare index i uses
    ``np.random.default_rng([seed, i, draw])``, `draw` from torch's generator (seeded per worker and
    epoch by a DataLoader). stream: datasets of one run with different streams augment independently
    (the key gains the stream when it is not 0). lidars: LiDARs used (None: all). paste: an
    `ObjectBank` and its `PasteConfig`: labeled frames receive objects of the bank before the
    augmentation (drawn from the same key plus a last 1).
    """

    def __init__(
        self,
        sets: Sequence[FrameSet],
        spec: BatchSpec,
        *,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        stream: int = 0,
        lidars: Sequence[str] | None = None,
        skip_corrupt: bool = False,
        paste: tuple[ObjectBank, PasteConfig] | None = None,
    ):
        self.sets = list(sets)
        self.paste = paste
        self.spec = spec
        self.augment = augment
        self.seed = seed
        self.stream = int(stream)
        self.lidars = list(lidars) if lidars else None
        self.skip_corrupt = skip_corrupt
        self.skipped: set[int] = set()  # frames found bad in this process (each worker has its own)
        self._ends = np.cumsum([len(s) for s in self.sets]).tolist()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def _locate(self, i: int) -> tuple[FrameSet, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} of a dataset of {len(self)}")
        k = bisect.bisect_right(self._ends, i)
        return self.sets[k], i - (self._ends[k - 1] if k else 0)

    def record(self, i: int) -> FrameRecord:
        """The record of frame `i`, as its source holds it."""
        part, j = self._locate(i)
        return part.source[part.indices[j]]

    def __getitem__(self, item: int | SampleIndex) -> Sample:
        i, epoch = (int(item.index), int(item.epoch)) if isinstance(item, SampleIndex) else (int(item), None)
        if not self.skip_corrupt:
            return self._sample(i, epoch)
        for k in range(len(self)):  # a bad frame is replaced by the next good one, and reported once
            at = (i + k) % len(self)
            if at in self.skipped:
                continue
            try:
                return self._sample(at, epoch)
            except DataError as exc:
                self.skipped.add(at)
                _log.warning("skipping a corrupt frame (%d skipped so far in this process): %s",
                             len(self.skipped), one_line(exc))
        raise DataError(f"every one of the {len(self)} frames is corrupt (see the warnings above)")

    def _sample(self, i: int, epoch: int | None = None) -> Sample:
        part, j = self._locate(i)
        record = part.source[part.indices[j]]
        spec = self.spec
        sample = canonicalize(record, lidars=self.lidars, decode_images=spec.cameras, **part.options)
        cols = [
            sample.points[:, sample.columns.index(c)]
            if c in sample.columns
            else np.zeros(len(sample.points), np.float32)
            for c in spec.columns
        ]
        points = np.stack(cols, 1).astype(np.float32) if cols else sample.points[:, :0]
        changes: dict[str, Any] = {"points": points, "columns": spec.columns}
        if not part.labeled:
            changes["boxes"] = Boxes.empty()
        if not spec.cameras:
            changes.update(images={}, cameras=())
        sample = dataclasses.replace(sample, **changes)
        if self.augment is None and self.paste is None:
            return sample
        if epoch is None:  # a bare index: torch's generator is seeded per worker and epoch by the loader
            key = [self.seed, i, int(torch.randint(0, 2**31 - 1, ()).item())]
        else:
            key = [self.seed, epoch, i] + ([self.stream] if self.stream else [])
        if self.paste is not None and part.labeled:
            bank, config = self.paste
            origin = lidar_origin(record, sample)
            sample = paste_objects(sample, bank, config, np.random.default_rng([*key, 1]), origin)
        if self.augment is not None:
            sample = augment(sample, np.random.default_rng(key), self.augment)
        return sample


def lidar_origin(record: FrameRecord, sample: Sample) -> np.ndarray:
    """(3,) the position of the record's main LiDAR in the sample's canonical frame (the default
    mounting of `AugmentConfig.lidar_origin` when the record has no rig or no LiDAR)."""
    rig = getattr(record, "rig", None)
    main = main_lidar(rig) if rig is not None else None
    if main is None:
        return np.asarray(AugmentConfig.lidar_origin, np.float64)
    return np.asarray(main.vehicle_from_lidar, np.float64)[:3, 3] - np.array([0.0, 0.0, sample.ground_z])


class Collate:
    """`collate` with the keyword arguments of a `BatchSpec`; picklable (DataLoader workers).

    with_samples: return ``(samples, batch)`` (evaluation keeps each frame's full ground truth).
    """

    def __init__(self, spec: BatchSpec, with_samples: bool = False):
        self.spec = spec
        self.with_samples = with_samples

    def __call__(self, samples: list[Sample]) -> Batch | tuple[list[Sample], Batch]:
        """The `Batch` of `samples` (with the samples first when `with_samples`)."""
        batch = collate(samples, **self.spec.collate_kwargs())
        return (samples, batch) if self.with_samples else batch


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the pipeline's DataLoaders: numpy's BLAS on one thread in each worker
    (torch's own pool already is), so a worker's point transforms do not spin on the cores the
    model computes on (`drivetl._io.single_threaded_blas`)."""
    single_threaded_blas()


def held_out(n: int, fraction: float) -> int:
    """How many of `n` frames a validation `fraction` holds out: at least one, and never all."""
    return min(max(math.ceil(n * fraction), 1), n - 1) if n > 1 else 0


def open_source(root: str | Path, fmt: str = "auto", option: str = "--data.root"):
    """A frame source over `root`: an object with ``len`` and ``[i] -> FrameRecord``.

    fmt: ``waymo`` (Waymo v1 ``*.tfrecord`` files, random access by record index), ``waymo-v2``
    (a Waymo v2 folder of Parquet component files), ``team`` (a team folder with its rig.yaml),
    ``cache`` (the training cache of ``drivetl convert``) or ``auto`` (decided from what the
    folder holds). option: the command-line option that named
    `root`, for the error message.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(
            f"{root}: data folder not found (set {option} to a Waymo TFRecord or v2 folder, a team "
            "folder or a training cache)"
        )
    if fmt == "auto":
        if (root / "index.json").is_file():
            fmt = "cache"
        elif is_v2_folder(root):
            fmt = "waymo-v2"
        elif root.is_file() or any(root.rglob("*.tfrecord")):
            fmt = "waymo"
        elif (root / "rig.yaml").is_file():
            fmt = "team"
        else:
            raise DataError(
                f"{root}: neither a training cache (index.json), Waymo TFRecords (*.tfrecord), a Waymo "
                "v2 folder (lidar/, vehicle_pose/, ... of Parquet files) nor a team folder (rig.yaml); "
                "pass --data.format or point --data.root at the data"
            )
    if fmt == "waymo":
        files = [root] if root.is_file() else sorted(root.rglob("*.tfrecord"))
        if not files:
            raise DataError(f"{root}: no *.tfrecord files")
        return WaymoRecordIndex(files)
    if fmt == "waymo-v2":
        return WaymoV2RecordIndex(root)
    if fmt == "team":
        return TeamReader(root)
    if fmt == "cache":
        return TrainingCache(root)
    raise DataError(f"data.format must be auto, waymo, waymo-v2, team or cache; got {fmt!r}")
