"""The real KITTI frame: its calib file as a rig, and its Velodyne points projected into image_2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivetl.calib import load_rig, rig_from_kitti_calib, save_rig
from drivetl.calib.kitti import read_kitti_calib
from drivetl.errors import RigError


@pytest.fixture(scope="module")
def kitti(real_data: Path) -> Path:
    return real_data / "kitti_object" / "training"


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_kitti_projection_matches_the_matrix_product(kitti: Path, kitti_image_mask: np.ndarray) -> None:
    size = _image_size(kitti / "image_2" / "000000.png")
    assert size == (1224, 370)
    rig = rig_from_kitti_calib(kitti / "calib" / "000000.txt", size)
    camera = rig.camera("camera_2")
    np.testing.assert_array_equal(rig.lidar("velodyne").vehicle_from_lidar, np.eye(4))
    scan = np.fromfile(kitti / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)
    assert len(scan) == 115_384

    uv, depth, inside = camera.project(scan[:, :3])
    np.testing.assert_array_equal(inside, kitti_image_mask)

    calib = read_kitti_calib(kitti / "calib" / "000000.txt")
    r0 = np.eye(4)
    r0[:3, :3] = calib["R0_rect"]
    tr = np.eye(4)
    tr[:3] = calib["Tr_velo_to_cam"]
    hom = np.c_[scan[:, :3].astype(np.float64), np.ones(len(scan))]
    direct = (calib["P2"] @ r0 @ tr @ hom.T).T
    uv_direct = direct[:, :2] / direct[:, 2:3]
    np.testing.assert_allclose(depth, direct[:, 2], atol=1e-9)
    assert np.abs(uv[inside] - uv_direct[inside]).max() < 1e-6
    # the mask is the plain definition: positive depth and inside the 1224x370 image
    u, v = uv_direct[:, 0], uv_direct[:, 1]
    expected = (direct[:, 2] > 0) & (u >= 0) & (u < 1224) & (v >= 0) & (v < 370)
    np.testing.assert_array_equal(inside, expected)

    # the same on torch tensors (float64 keeps 1e-6 px)
    uv_t, _, inside_t = camera.project(torch.from_numpy(scan[:, :3].astype(np.float64)))
    np.testing.assert_array_equal(inside_t.numpy(), kitti_image_mask)
    assert float((uv_t.numpy()[inside] - uv_direct[inside]).__abs__().max()) < 1e-6


def test_kitti_rig_saves_and_reloads(kitti: Path, tmp_path: Path) -> None:
    rig = rig_from_kitti_calib(kitti / "calib" / "000000.txt", (1224, 370))
    save_rig(rig, tmp_path / "kitti.yaml")
    again = load_rig(tmp_path / "kitti.yaml")
    scan = np.fromfile(kitti / "velodyne" / "000000.bin", dtype=np.float32).reshape(-1, 4)[::50, :3]
    a = rig.camera("camera_2").project(scan)
    b = again.camera("camera_2").project(scan)
    np.testing.assert_array_equal(a[2], b[2])
    assert np.abs(a[0][a[2]] - b[0][b[2]]).max() < 1e-6


def test_bad_kitti_calib_files(tmp_path: Path) -> None:
    path = tmp_path / "calib.txt"
    path.write_text("P2: 1 0 0\n")
    with pytest.raises(RigError, match=r"calib\.txt: P2: expected 12 numbers, got 3"):
        rig_from_kitti_calib(path)
    path.write_text("P0: " + " ".join(["0"] * 12) + "\n")
    with pytest.raises(RigError, match="missing P2"):
        rig_from_kitti_calib(path)
    with pytest.raises(RigError, match="no such KITTI calibration file"):
        rig_from_kitti_calib(tmp_path / "nope.txt")
