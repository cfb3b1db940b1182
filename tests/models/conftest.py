"""Fixtures for model tests: seeded synthetic samples, batches and a very small detector."""

from __future__ import annotations

import pytest
import torch

from drivetl.data.collate import Batch, collate
from drivetl.data.synthetic import synthetic_sample
from drivetl.models import BEVDetector, CameraEncoder, ImageBackbone, LidarEncoder

COLUMNS = ("x", "y", "z", "intensity", "elongation")


def small_detector(camera: bool = True, **kwargs) -> BEVDetector:
    """±12.8 m at 0.4 m pillars (64 x 64), narrow layers: fast enough for unit tests on one core."""
    torch.manual_seed(0)
    lidar = LidarEncoder(
        voxel_size=(0.4, 0.4, 6.0),
        point_range=(-12.8, -12.8, -1.0, 12.8, 12.8, 5.0),
        pfn_channels=(16,),
        use_elongation=True,
        widths=(16, 16, 24),
        depths=(1, 1, 1),
        strides=(2, 2, 2),
        out_channels=16,
        out_stride=2,
    )
    cam = None
    if camera:
        cam = CameraEncoder(
            ImageBackbone(widths=(8, 16, 16), depths=(1, 1, 1), out_channels=16, out_stride=8),
            heights=(0.5, 1.5),
            out_channels=16,
        )
    return BEVDetector(
        ("vehicle", "pedestrian", "cyclist", "sign"),
        lidar,
        cam,
        fusion_channels=16,
        head_channels=16,
        **kwargs,
    )


def small_batch(seeds=(0, 1), cameras: bool = True) -> Batch:
    samples = [
        synthetic_sample(s, extent=11.0, num_boxes=5, ground_points=1500, cameras=cameras) for s in seeds
    ]
    return collate(
        samples,
        image_size=(48, 64) if cameras else None,
        columns=COLUMNS,
        camera_names=None if cameras else (),
    )


@pytest.fixture(scope="module")
def syn_batch() -> Batch:
    """Two synthetic frames with two cameras each."""
    return small_batch()


@pytest.fixture
def make_detector():
    """small_detector(camera=True, **BEVDetector kwargs)."""
    return small_detector


@pytest.fixture
def make_batch():
    """small_batch(seeds=(0, 1), cameras=True)."""
    return small_batch


def _sgd_step(model: torch.nn.Module, lr: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.grad is not None:
                p -= lr * p.grad
                p.grad = None


@pytest.fixture
def sgd_step():
    """sgd_step(model, lr): one plain gradient step on the trainable parameters (no torch.optim:
    its first use imports the compiler stack, seconds of test time)."""
    return _sgd_step
