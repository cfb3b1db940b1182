"""Fixtures for training tests: synthetic batches, one intra-op thread (detector config: ../conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drivetl.data.collate import collate
from drivetl.data.synthetic import synthetic_sample
from drivetl.train.pretrain import PretrainModule

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


#: a detector small enough for a few CPU training steps in a test
TINY_DETECTOR = {
    "class_path": "drivetl.models.BEVDetector",
    "init_args": {
        "classes": ["vehicle", "pedestrian", "cyclist", "sign"],
        "head_channels": 8,
        "lidar": {
            "class_path": "drivetl.models.LidarEncoder",
            "init_args": {
                "voxel_size": [1.6, 1.6, 6.0],
                "point_range": [-25.6, -25.6, -1.0, 25.6, 25.6, 5.0],
                "pfn_channels": [8],
                "widths": [8, 16],
                "depths": [1, 1],
                "strides": [1, 2],
                "out_channels": 8,
                "out_stride": 2,
            },
        },
    },
}


def save_pretrained(
    path: Path,
    detector: dict = TINY_DETECTOR,
    seed: int = 0,
    camera: bool = False,
    objectives: dict | None = None,
    rig: str = "waymo_like",
) -> Path:
    """A pretraining checkpoint written as Lightning would (state dict + hparams + on_save_checkpoint);
    objectives default to detection + occupancy."""
    torch.manual_seed(seed)
    module = PretrainModule(detector, objectives=objectives or {"detection": 1.0, "occupancy": 0.5})
    module._seen.update(columns=["x", "y", "z", "intensity"], rigs={rig})
    if camera:
        module._seen.update(camera_names=["FRONT", "FRONT_LEFT"], image_size=[48, 64])
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "epoch": 0,
        "global_step": 0,
    }
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path
