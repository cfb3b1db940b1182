"""Damaged inputs that used to escape as a library's own exception: each is now one DataError or
CheckpointError naming the file (or frame and camera) and the problem."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drivetl.data.formats.kitti import read_kitti_labels
from drivetl.data.formats.pointfile import read_points
from drivetl.data.records import CameraImage
from drivetl.errors import CheckpointError, DataError
from drivetl.models.adapters._export import META_KEY, read_adapter_metadata


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (10, 20, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_corrupt_jpeg_is_a_data_error(damage: str) -> None:
    good = _jpeg()
    noise = bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8))
    data = noise if damage == "random" else good[:40]
    img = CameraImage("FRONT", data, "jpeg")
    with pytest.raises(DataError, match="camera FRONT: (undecodable|unreadable) jpeg"):
        img.decode()
    assert CameraImage("FRONT", good, "jpeg").decode().shape == (16, 32, 3)


def test_truncated_npz_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "sweep.npz"
    np.savez(path, points=np.zeros((10, 4), np.float32))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"sweep\.npz: unreadable point file"):
        read_points(path)


def test_kitti_nan_rotation_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "000000.txt"
    path.write_text("Car 0.00 0 -1.5 100 100 200 200 1.5 1.6 3.9 1.0 1.7 10.0 nan\n")
    with pytest.raises(DataError, match=r"000000\.txt:1: NaN or inf"):
        read_kitti_labels(path)


@pytest.mark.parametrize("header", ["{not json", "[1, 2]"])
def test_malformed_adapter_header(tmp_path: Path, header: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "adapters.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={META_KEY: header})
    message = r"adapters\.safetensors: the 'drivetl\.adapters' header is not"
    with pytest.raises(CheckpointError, match=message):
        read_adapter_metadata(path)
