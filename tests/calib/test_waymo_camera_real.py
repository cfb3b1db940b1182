"""The camera model against Waymo's own: a real v1 frame's laser labels projected into its five cameras.

Each `projected_lidar_labels` box is Waymo's projection of a 3D laser label (made with its camera
model, rolling-shutter handling included). Projecting the label's 8 corners with `CameraModel` built
from the frame's calibration must give the same 2D boxes to a fraction of a pixel; a wrong frame
convention or distortion order would be off by tens of pixels.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from drivetl.calib import CameraModel


def _corners(box) -> np.ndarray:  # noqa: ANN001 - a label_pb2.Label.Box
    sx = np.array([1, 1, 1, 1, -1, -1, -1, -1]) * box.length / 2
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * box.width / 2
    sz = np.array([1, -1, 1, -1, 1, -1, 1, -1]) * box.height / 2
    c, s = np.cos(box.heading), np.sin(box.heading)
    return np.stack([c * sx - s * sy, s * sx + c * sy, sz], axis=1) + [
        box.center_x,
        box.center_y,
        box.center_z,
    ]


def test_projected_laser_labels_match_waymo(real_data: Path) -> None:
    dataset_pb2 = pytest.importorskip("waymo_open_dataset.dataset_pb2")
    data = (real_data / "waymo_v1" / "pvps_one_frame.tfrecord").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    frame = dataset_pb2.Frame()
    frame.ParseFromString(data[12 : 12 + length])
    laser = {label.id: label for label in frame.laser_labels}
    compared = 0
    for calib in frame.context.camera_calibrations:
        name = dataset_pb2.CameraName.Name.Name(calib.name)
        fu, fv, cu, cv, k1, k2, p1, p2, k3 = calib.intrinsic
        camera = CameraModel(
            name, calib.width, calib.height, fu, fv, cu, cv, k1, k2, p1, p2, k3,
            vehicle_from_camera=np.array(calib.extrinsic.transform).reshape(4, 4),
        )  # fmt: skip
        errors = []
        for projected in frame.projected_lidar_labels:
            if projected.name != calib.name:
                continue
            for label in projected.labels:
                source = laser.get(label.id.removesuffix(f"_{name}"))
                if source is None:
                    continue
                uv, _, inside = camera.project(_corners(source.box))
                if not inside.all():  # Waymo clips partly visible boxes to the image
                    continue
                lo, hi = uv.min(axis=0), uv.max(axis=0)
                ours = np.r_[(lo + hi) / 2, hi - lo]
                b = label.box
                errors.append(np.abs(ours - [b.center_x, b.center_y, b.length, b.width]).max())
        assert errors, f"no fully visible label in camera {name}"
        assert max(errors) < 0.5, (name, max(errors))
        compared += len(errors)
    assert compared >= 40
