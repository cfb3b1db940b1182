"""Shared fixtures: the real recordings beside the project, a very small detector config, GPU skipping."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("DRIVETL_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """`../shared/data/real` (or $DRIVETL_REAL_DATA); the test skips when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real recordings not found at {REAL_DATA} (set DRIVETL_REAL_DATA)")
    return REAL_DATA


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


@pytest.fixture(scope="session")
def kitti_image_mask(real_data: Path):
    """(N,) bool: which points of the real KITTI scan 000000 land in its image_2.

    An oracle independent of drivetl: the calib file parsed here, each point mapped by
    P2 @ R0_rect @ Tr_velo_to_cam, kept when its depth is positive and it falls inside the image.
    """
    import numpy as np
    from PIL import Image

    training = real_data / "kitti_object" / "training"
    calib = {}
    for line in (training / "calib" / "000000.txt").read_text().splitlines():
        if ":" in line:
            key, values = line.split(":", 1)
            calib[key.strip()] = np.array(values.split(), dtype=np.float64)
    rect = np.eye(4)
    rect[:3, :3] = calib["R0_rect"].reshape(3, 3)
    velo_to_cam = np.eye(4)
    velo_to_cam[:3] = calib["Tr_velo_to_cam"].reshape(3, 4)
    scan = np.fromfile(training / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    hom = np.c_[scan[:, :3].astype(np.float64), np.ones(len(scan))]
    image = (calib["P2"].reshape(3, 4) @ rect @ velo_to_cam @ hom.T).T
    with Image.open(training / "image_2" / "000000.png") as im:
        width, height = im.size
    depth = image[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = image[:, 0] / depth, image[:, 1] / depth
    mask = (depth > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    assert 0 < mask.sum() < len(mask)
    return mask


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests cleanly when no CUDA device is usable."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch means no GPU
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)
