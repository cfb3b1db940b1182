"""The order of training frames, as a pure function of (seed, epoch): `EpochSampler` and `SampleIndex`.

A resumed run must see the same frames in the same order, augmented the same way, as the run it
continues. So nothing about the order comes from global random state:

- the order of epoch ``e`` is ``np.random.default_rng([seed, e]).permutation(n)`` (or ``0..n-1``
  without shuffling), whatever the process, the number of loader workers, or where the run stopped;
- a sampler can start an epoch part-way (`EpochSampler.resume_at`): the frames a killed run had
  already trained on in that epoch are left out, and its length stays the whole epoch's (the
  training loop counts the batches it had already done);
- it yields `SampleIndex(index, epoch)` rather than a bare index, so that `FrameDataset` draws a
  frame's augmentation from ``(seed, epoch, index)``, in whichever worker process it runs.

With several processes (DDP) each replica takes every ``num_replicas``-th position of the epoch's
order, the order padded with its own start to a multiple of ``num_replicas`` (as torch's
`DistributedSampler` does, which this class extends, so Lightning keeps it instead of wrapping it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import NamedTuple

import numpy as np
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EpochSampler", "SampleIndex", "epoch_order"]


class SampleIndex(NamedTuple):
    """A dataset index with the epoch it is drawn in (`FrameDataset` seeds augmentation with both)."""

    index: int
    epoch: int


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True, stream: int = 0) -> np.ndarray:
    """(n,) int64: the order of `n` frames in `epoch`, a permutation drawn from (seed, epoch), or from
    (seed, epoch, stream) for a stream other than 0 (another loader of the same run)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    key = [int(seed), int(epoch)] + ([int(stream)] if stream else [])
    return np.random.default_rng(key).permutation(n).astype(np.int64)


class EpochSampler(DistributedSampler):
    """Frames of `dataset` in `epoch_order`, one replica's share, optionally from part-way in.

    dataset: anything with ``len``. seed: the order's seed (the data module's ``seed``); stream:
    loaders of one run with different streams draw independent orders. shuffle: False keeps file
    order. num_replicas, rank: this process's share (1, 0 without DDP).
    drop_last: drop the tail that does not divide among the replicas (else pad with the start).
    `set_epoch(e)` (Lightning calls it at each epoch start) chooses the epoch; `resume_at(e, k)`
    makes epoch `e`'s next pass start at this replica's `k`-th frame (once: a later pass over the
    same epoch, such as a shorter loader cycled by Lightning, starts at 0 again).
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        seed: int = 0,
        stream: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.stream = int(stream)
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, start: int) -> None:
        """Start at epoch `epoch`, leaving out this replica's first `start` frames of it."""
        if start < 0:
            raise ValueError(f"EpochSampler.resume_at: start must be >= 0, got {start}")
        self.set_epoch(int(epoch))
        self._resume = (int(epoch), int(start)) if start else None

    def replica_order(self, epoch: int) -> np.ndarray:
        """(num_samples,) int64: this replica's frames of `epoch`, in order."""
        n = len(self.dataset)
        order = epoch_order(n, self.seed, epoch, self.shuffle, self.stream)
        if self.drop_last:
            order = order[: self.total_size]
        elif self.total_size > n:
            order = np.resize(order, self.total_size)  # repeats the order's start as padding
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[SampleIndex]:
        epoch = int(self.epoch)
        start = 0
        if self._resume is not None and self._resume[0] == epoch:
            start = self._resume[1]
            self._resume = None
        for i in self.replica_order(epoch)[start:].tolist():
            yield SampleIndex(i, epoch)

    def __len__(self) -> int:
        return self.num_samples


def batches_per_epoch(frames: int, batch_size: int, drop_last: bool) -> int:
    """Batches of `frames` frames in groups of `batch_size` (the last one dropped when incomplete)."""
    return frames // batch_size if drop_last else math.ceil(frames / batch_size)
