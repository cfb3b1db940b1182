"""The training order: a pure function of (seed, epoch), resumable part-way, shared among replicas;
augmentation keyed by (seed, epoch, frame), not by global random state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from drivetl.calib import load_rig
from drivetl.data.augment import AugmentConfig
from drivetl.data.dataset import BatchSpec, Collate, FrameDataset, FrameSet, open_source
from drivetl.data.formats.team._example import write_example_team
from drivetl.data.sampling import EpochSampler, SampleIndex, epoch_order

ROOT = Path(__file__).resolve().parents[2]


def _indices(sampler: EpochSampler) -> list[int]:
    return [s.index for s in sampler]


def test_order_is_a_function_of_seed_and_epoch_only() -> None:
    data = range(11)
    a, b = EpochSampler(data, seed=3), EpochSampler(data, seed=3)
    torch.manual_seed(0)
    np.random.seed(0)
    first = _indices(a)
    torch.manual_seed(1)  # global generators play no part
    np.random.seed(1)
    assert _indices(b) == first
    assert sorted(first) == list(range(11)) and first != list(range(11))
    a.set_epoch(1)
    assert _indices(a) != first and sorted(_indices(a)) == list(range(11))
    assert _indices(EpochSampler(data, seed=4)) != first
    assert [s.epoch for s in a] == [1] * 11
    assert _indices(EpochSampler(data, seed=3, shuffle=False)) == list(range(11))
    assert epoch_order(11, 3, 1).tolist() == _indices(a)
    # another loader of the same run (the unlabeled frames of self-training): its own order
    c = EpochSampler(data, seed=3, stream=1)
    c.set_epoch(1)
    assert _indices(c) != _indices(a) and _indices(c) == epoch_order(11, 3, 1, stream=1).tolist()


def test_resume_at_leaves_out_what_was_done_once() -> None:
    sampler = EpochSampler(range(10), seed=0)
    sampler.set_epoch(2)
    whole = _indices(sampler)
    sampler.resume_at(2, 4)
    assert len(sampler) == 10  # the epoch's length: the training loop counts the batches it had done
    assert _indices(sampler) == whole[4:]
    assert _indices(sampler) == whole  # a second pass over the same epoch starts at its beginning
    sampler.resume_at(2, 4)
    sampler.set_epoch(2)  # Lightning sets the epoch again at the resumed epoch's start: no change
    assert _indices(sampler) == whole[4:]
    sampler.resume_at(2, 4)
    sampler.set_epoch(3)  # the position belongs to its epoch only
    assert _indices(sampler) == epoch_order(10, 0, 3).tolist()
    with pytest.raises(ValueError, match="start must be >= 0"):
        sampler.resume_at(2, -1)


@pytest.mark.parametrize("drop_last", [False, True])
def test_replicas_share_the_epoch(drop_last: bool) -> None:
    data = range(11)
    parts = [EpochSampler(data, seed=5, num_replicas=3, rank=r, drop_last=drop_last) for r in range(3)]
    for p in parts:
        p.set_epoch(1)
    got = [_indices(p) for p in parts]
    assert {len(g) for g in got} == {3 if drop_last else 4}
    order = epoch_order(11, 5, 1).tolist()
    flat = [i for k in range(len(got[0])) for i in (got[0][k], got[1][k], got[2][k])]
    assert flat == (order[:9] if drop_last else order + order[:1])
    parts[1].resume_at(1, 2)
    assert _indices(parts[1]) == got[1][2:]


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sampling") / "team"
    write_example_team(root, load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml"), frames=3, seed=2)
    return root


def _dataset(team: Path) -> FrameDataset:
    source = open_source(team, "team")
    return FrameDataset([FrameSet(source, range(len(source)))], BatchSpec(), augment=AugmentConfig(), seed=7)


def test_augmentation_is_keyed_by_seed_epoch_and_frame(team: Path) -> None:
    ds = _dataset(team)
    torch.manual_seed(0)
    a = ds[SampleIndex(1, 4)].points
    torch.manual_seed(123)  # the global generator plays no part
    assert np.array_equal(ds[SampleIndex(1, 4)].points, a)
    assert not np.array_equal(ds[SampleIndex(1, 5)].points, a)  # another epoch, another draw
    other = _dataset(team)
    other.stream = 1  # another dataset of the run (the unlabeled frames): drawn apart
    assert not np.array_equal(other[SampleIndex(1, 4)].points, a)
    # a bare index keeps drawing from torch's generator (seeded per worker and epoch by a loader)
    torch.manual_seed(0)
    b = ds[1].points
    torch.manual_seed(1)
    assert not np.array_equal(ds[1].points, b)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_do_not_depend_on_workers_or_global_state(team: Path, workers: int) -> None:
    ds = _dataset(team)

    def points(num_workers: int, torch_seed: int) -> list[torch.Tensor]:
        torch.manual_seed(torch_seed)
        sampler = EpochSampler(ds, seed=7)
        sampler.set_epoch(1)
        loader = DataLoader(ds, sampler=sampler, batch_size=1, num_workers=num_workers,
                            collate_fn=Collate(ds.spec))
        return [batch.points for batch in loader]

    reference = points(0, 0)
    got = points(workers, 99)
    assert len(got) == len(reference) == 3
    assert all(torch.equal(a, b) for a, b in zip(got, reference, strict=True))
