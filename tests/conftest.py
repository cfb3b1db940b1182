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


@pytest.fixture(scope="session")
def dgp_scene_files() -> dict[str, bytes]:
    """{path in the scene folder: bytes} of a one-sample TRI DGP scene, written here: a 16-beam
    LiDAR (.npz, points on its beams at 10 m), a 16 x 12 camera, calibration, ontology and two 3D
    boxes (a Car and a Pedestrian)."""
    import io
    import json

    import numpy as np
    from PIL import Image

    when = "2019-05-15T00:38:58.203752Z"
    ident = {"qw": 1.0, "qx": 0.0, "qy": 0.0, "qz": 0.0}
    optical = {"qw": 0.5, "qx": -0.5, "qy": 0.5, "qz": -0.5}

    def pose(rotation, x=0.0, y=0.0, z=0.0):
        return {"rotation": rotation, "translation": {"x": x, "y": y, "z": z}}

    scene = {
        "data": [
            {"key": "k1", "id": {"name": "LIDAR", "timestamp": when}, "datum": {"point_cloud": {
                "filename": "point_cloud/LIDAR/1.npz", "point_format": ["X", "Y", "Z", "INTENSITY"],
                "annotations": {"1": "bounding_box_3d/LIDAR/1.json"}, "pose": pose(ident, 400.0, -250.0)}}},
            {"key": "k2", "id": {"name": "CAMERA_01", "timestamp": when}, "datum": {"image": {
                "filename": "rgb/CAMERA_01/1.jpg", "width": 16, "height": 12, "channels": 3}}},
        ],
        "samples": [{"id": {"timestamp": when}, "datum_keys": ["k1", "k2"], "calibration_key": "c"}],
        "ontologies": {"1": "o"},
    }
    calibration = {
        "names": ["LIDAR", "CAMERA_01"],
        "extrinsics": [pose(ident, 0.0, 0.0, 1.8), pose(optical, 1.6, 0.0, 1.4)],
        "intrinsics": [{"fx": 0.0, "fy": 0.0, "cx": 0.0, "cy": 0.0, "skew": 0.0},
                       {"fx": 8.0, "fy": 8.0, "cx": 8.0, "cy": 6.0, "skew": 0.0}],
    }
    ontology = {"items": [{"id": 0, "name": "Car"}, {"id": 1, "name": "Pedestrian"}]}
    boxes = {"annotations": [
        {"box": {"pose": pose(ident, 8.0, 2.0), "length": 4.5, "width": 1.9, "height": 1.6},
         "class_id": 0, "instance_id": 7, "num_points": 20},
        {"box": {"pose": pose(ident, 5.0, -3.0), "length": 0.6, "width": 0.6, "height": 1.8},
         "class_id": 1, "instance_id": 8, "num_points": 5},
    ]}
    beams = np.radians(np.linspace(-15.0, 15.0, 16))
    e, a = np.meshgrid(beams, np.linspace(-np.pi, np.pi, 32, endpoint=False), indexing="ij")
    xyz = 10.0 * np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)
    points = io.BytesIO()
    np.savez(points, data=np.column_stack([xyz, np.full(len(xyz), 0.5)]).astype(np.float32))
    image = io.BytesIO()
    Image.new("RGB", (16, 12), (1, 2, 3)).save(image, "JPEG")
    return {
        "scene_1.json": json.dumps(scene).encode(),
        "calibration/c.json": json.dumps(calibration).encode(),
        "ontology/o.json": json.dumps(ontology).encode(),
        "bounding_box_3d/LIDAR/1.json": json.dumps(boxes).encode(),
        "point_cloud/LIDAR/1.npz": points.getvalue(),
        "rgb/CAMERA_01/1.jpg": image.getvalue(),
    }
