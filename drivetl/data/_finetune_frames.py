"""Which frames fine-tuning uses: a labeled subset, the unlabeled rest, validation, and source frames.

Every frame goes through the rig-driven `drivetl.data.canonicalize.canonicalize` (the same step as
pretraining). From a team's fleet folder (or anything `open_source` reads):

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivetl.calib.rig_vector import main_lidar
from drivetl.data.canonicalize import size_shift_between, size_statistics
from drivetl.data.dataset import FrameSet, held_out, open_source
from drivetl.data.records import FrameKey
from drivetl.errors import ConfigError, DataError

__all__ = ["FinetuneFrames", "read_frame_ids", "select_frames"]


@dataclass
class FinetuneFrames:
    """The frame sets of a fine-tuning run.

    labeled (target labeled frames, then source frames), unlabeled, val, norm (every target training
    frame, for BatchNorm re-estimation): lists of `FrameSet`. labeled_keys: the target labeled
    frames' ids (empty when the source has none); labeled_indices: their training-frame indices.
    source_options: the `canonicalize` options of the source frames.
    """

    labeled: list[FrameSet]
    unlabeled: list[FrameSet]
    val: list[FrameSet]
    norm: list[FrameSet]
    labeled_keys: list[FrameKey] = field(default_factory=list)
    labeled_indices: list[int] = field(default_factory=list)
    source_options: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Frames per set, and how many of the labeled ones are source frames."""
        sets = ("labeled", "unlabeled", "val", "norm")
        n = {name: sum(len(s) for s in getattr(self, name)) for name in sets}
        n["source"] = n["labeled"] - len(self.labeled_indices)
        return n

    def labeled_list(self) -> str:
        """The labeled target frames, one ``segment/timestamp_us`` per line (indices without ids)."""
        if self.labeled_keys:
            return "".join(f"{k.segment}/{k.timestamp_us}\n" for k in self.labeled_keys)
        return "# training-frame indices (the source has no frame ids)\n" + "".join(
            f"{i}\n" for i in self.labeled_indices
        )


def read_frame_ids(path: Path) -> list[FrameKey]:
    """Frame ids of a split file (``segment/timestamp_us`` per line, ``#`` comments)."""
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


def _has_keys(reader) -> bool:
    return isinstance(getattr(reader, "keys", None), list)


def _key(reader, i: int) -> FrameKey:
    keys = getattr(reader, "keys", None)
    if isinstance(keys, list):
        return keys[i]
    return reader[i].key


def select_frames(target, hp: Any) -> FinetuneFrames:
    """The frame sets of `target` (a frame source) for the data module's settings `hp` (see the
    module docstring for the fields it reads)."""
    splits = set(target.splits()) if hasattr(target, "splits") else set()
    train = target.split(hp.train_split) if hp.train_split in splits else target
    if hp.max_frames is not None:
        train = _Subset(train, range(min(len(train), hp.max_frames)))
    if hp.val_split in splits:
        val = target.split(hp.val_split)
        val_keys = set(getattr(val, "keys", []))
        train_idx = [i for i in range(len(train)) if _key(train, i) not in val_keys]
    else:
        n = len(train)
        n_val = held_out(n, hp.val_fraction)
        val, train_idx = _Subset(train, range(n - n_val, n)), list(range(n - n_val))
    if not train_idx:
        raise DataError(f"{hp.root}: no training frames (found {len(train)}, validation {len(val)})")
    labeled_idx = _pick_labeled(train, train_idx, hp)
    chosen = set(labeled_idx)
    unlabeled_idx = [i for i in train_idx if i not in chosen]
    extra: list[FrameSet] = []
    if hp.unlabeled_split is not None:
        if hp.unlabeled_split not in splits:
            raise DataError(
                f"{hp.root}: no split {hp.unlabeled_split!r} for data.unlabeled_split (have {sorted(splits)})"
            )
        u = target.split(hp.unlabeled_split)
        extra = [FrameSet(u, range(len(u)), labeled=False)]
    source, options = _source_frames(target, train, labeled_idx, hp)
    return FinetuneFrames(
        labeled=[FrameSet(train, labeled_idx), *source],
        unlabeled=[FrameSet(train, unlabeled_idx, labeled=False), *extra],
        val=[FrameSet(val, range(len(val)))],
        norm=[FrameSet(train, train_idx, labeled=False), *extra],
        labeled_keys=[_key(train, i) for i in labeled_idx] if _has_keys(train) else [],
        labeled_indices=list(labeled_idx),
        source_options=options,
    )


def _pick_labeled(train, train_idx: list[int], hp: Any) -> list[int]:
    if hp.labeled_split_file is not None:
        wanted = set(read_frame_ids(Path(hp.labeled_split_file)))
        idx = [i for i in train_idx if _key(train, i) in wanted]
        if not idx:
            raise ConfigError(
                f"{hp.labeled_split_file}: none of its frame ids is a training frame of {hp.root}"
            )
        return idx
    n = max(1, round(hp.labeled_fraction * len(train_idx)))
    rng = np.random.default_rng(hp.seed)
    return sorted(train_idx[j] for j in rng.choice(len(train_idx), n, replace=False))


def _source_frames(target, train, labeled_idx: list[int], hp: Any) -> tuple[list[FrameSet], dict[str, Any]]:
    if hp.source_root is None:
        return [], {}
    source = open_source(hp.source_root, hp.source_format)
    n = len(source) if hp.source_max_frames is None else min(len(source), hp.source_max_frames)
    options: dict[str, Any] = {}
    main = main_lidar(getattr(target, "rig", None) or target[0].rig)
    if hp.source_beam_resample and main is not None:
        options["target_beams"] = main
    if hp.source_size_shift:
        probe = range(0, n, max(1, n // 200))
        src_stats = size_statistics(source[i] for i in probe)
        tgt_stats = size_statistics(train[i] for i in labeled_idx)
        options["size_shift"] = {
            c: [float(x) for x in v] for c, v in size_shift_between(src_stats, tgt_stats).items()
        }
    return [FrameSet(source, range(n), options=options)], options
