"""Fixtures for training tests: a very small detector config and synthetic batches."""

from __future__ import annotations

import copy

import pytest

from drivetl.data.collate import collate
from drivetl.train.synthetic import synthetic_sample

COLUMNS = ("x", "y", "z", "intensity", "elongation")

SMALL_DETECTOR = {
    "class_path": "drivetl.models.BEVDetector",
    "init_args": {
        "classes": ["vehicle", "pedestrian", "cyclist", "sign"],
        "fusion_channels": 16,
        "head_channels": 16,
        "camera_dropout": 0.2,
        "lidar": {
            "class_path": "drivetl.models.LidarEncoder",
            "init_args": {
                "voxel_size": [0.4, 0.4, 6.0],
                "point_range": [-12.8, -12.8, -1.0, 12.8, 12.8, 5.0],
                "pfn_channels": [16],
                "use_elongation": True,
                "widths": [16, 16, 24],
                "depths": [1, 1, 1],
                "strides": [2, 2, 2],
                "out_channels": 16,
                "out_stride": 2,
            },
        },
        "camera": {
            "class_path": "drivetl.models.CameraEncoder",
            "init_args": {
                "heights": [0.5, 1.5],
                "out_channels": 16,
                "backbone": {
                    "class_path": "drivetl.models.ImageBackbone",
                    "init_args": {
                        "widths": [8, 16, 16],
                        "depths": [1, 1, 1],
                        "out_channels": 16,
                        "out_stride": 8,
                    },
                },
            },
        },
    },
}


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


def small_detector_spec(camera: bool = True) -> dict:
    """A fresh class_path/init_args dict of the very small detector (LiDAR only without camera)."""
    spec = copy.deepcopy(SMALL_DETECTOR)
    if not camera:
        del spec["init_args"]["camera"], spec["init_args"]["camera_dropout"]
    return spec


@pytest.fixture
def detector_spec() -> dict:
    """A plain class_path/init_args dict of a very small LiDAR + camera detector."""
    return small_detector_spec()


@pytest.fixture(scope="session")
def detector_spec_factory():
    """small_detector_spec(camera=True) -> dict, for module-scoped fixtures."""
    return small_detector_spec


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
