"""Fixtures for training tests: synthetic batches, one intra-op thread (detector config: ../conftest.py)."""

from __future__ import annotations

import pytest

from drivetl.data.collate import collate
from drivetl.data.synthetic import synthetic_sample

COLUMNS = ("x", "y", "z", "intensity", "elongation")


def _batch(seeds=(0, 1), cameras=True, num_boxes=5):
    samples = [
        synthetic_sample(s, extent=11.0, num_boxes=num_boxes, ground_points=1500, cameras=cameras)
        for s in seeds
    ]
    return collate(
        samples,
        image_size=(48, 64) if cameras else None,
        columns=COLUMNS,
        camera_names=None if cameras else (),
    )


@pytest.fixture
def batch_factory():
    """_batch(seeds=(0, 1), cameras=True, num_boxes=5) -> Batch."""
    return _batch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: the tiny models gain nothing from more, and extra threads
    stall when the cores are busy."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
