"""A real Waymo v1 frame (cameras, calibrations, labels; no range images) read by our reader."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivetl.data.formats.waymo import CAMERA_NAMES, WaymoV1Reader


@pytest.fixture(scope="module")
def frame(real_data):
    path = real_data / "waymo_v1" / "pvps_one_frame.tfrecord"
    if not path.is_file():
        # The recordings folder is here (`real_data` skips only when it is absent), so a missing
        # file means it was moved or renamed: fail rather than skip silently.
        pytest.fail(f"{path} is missing although {real_data} exists; restore it or update this test")
    frames = list(WaymoV1Reader(path))
    assert len(frames) == 1
    return frames[0]


def test_reads_cleanly(frame) -> None:
    assert frame.key.segment == "1024360143612057520_3580_000_3600_000"
    assert frame.key.timestamp_us == 1553735853462203
    assert len(frame.images) == 5
    for name, image in frame.images.items():
        cam = frame.rig.camera(name)
        pixels = image.decode()
        assert pixels.shape == (cam.height, cam.width, 3), name
    assert len(frame.proto.laser_labels) == 75
    assert len(frame.boxes) == 75
    assert set(frame.boxes.classes) <= {"vehicle", "pedestrian", "cyclist", "sign"}
    assert frame.points().shape == (0, 3)  # its range images were removed upstream
    assert [lid.name for lid in frame.rig.lidars] == ["TOP", "FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR"]
    assert frame.rig.lidar("TOP").rows == 64
    assert frame.rig.lidar("FRONT").rows == 200  # min/max only: Waymo's default side-laser height
    assert abs(frame.world_from_vehicle[0, 3] - -25211.2589) < 1e-3
    assert frame.rig.camera("FRONT").rolling_shutter_direction == "LEFT_TO_RIGHT"
    record = frame.to_record()
    assert len(record.cameras) == 5 and len(record.boxes) == 75 and not record.lidars


def _corners(box: np.ndarray) -> np.ndarray:
    x, y, z, length, width, height, heading = box
    c, s = math.cos(heading), math.sin(heading)
    out = []
    for dx in (-length / 2, length / 2):
        for dy in (-width / 2, width / 2):
            for dz in (-height / 2, height / 2):
                out.append((x + c * dx - s * dy, y + s * dx + c * dy, z + dz))
    return np.array(out)


def _projection_errors(frame, use_image_pose: bool) -> tuple[list[float], list[float]]:
    """Per box, max |corner difference| (px) between our projected 2D box and the frame's
    projected_lidar_labels box: (boxes fully in front of the camera, clipped to the image;
    boxes fully inside the image)."""
    boxes = {frame.boxes.ids[i]: frame.boxes.boxes[i] for i in range(len(frame.boxes))}
    in_front, inside = [], []
    for cam_labels in frame.proto.projected_lidar_labels:
        name = CAMERA_NAMES[cam_labels.name - 1]
        cam = frame.rig.camera(name)
        vehicle_from_vehicle = np.eye(4)
        if use_image_pose:  # the vehicle pose when the image was taken, not at the frame time
            vehicle_from_vehicle = np.linalg.inv(frame.image_poses[name]) @ frame.world_from_vehicle
        for label in cam_labels.labels:
            corners = _corners(boxes[label.id.removesuffix("_" + name)])
            corners = corners @ vehicle_from_vehicle[:3, :3].T + vehicle_from_vehicle[:3, 3]
            uv, depth, in_image = cam.project(corners)
            if not np.all(depth > 0):
                continue
            b = label.box
            theirs = np.array(
                [
                    b.center_x - b.length / 2,
                    b.center_y - b.width / 2,
                    b.center_x + b.length / 2,
                    b.center_y + b.width / 2,
                ]
            )
            ours = np.concatenate([uv.min(0), uv.max(0)])
            clipped = np.clip(ours, 0, [cam.width, cam.height, cam.width, cam.height])
            in_front.append(float(np.abs(clipped - theirs).max()))
            if in_image.all():
                inside.append(float(np.abs(ours - theirs).max()))
    return in_front, inside


def test_projected_labels_reproduced(frame) -> None:
    in_front, inside = _projection_errors(frame, use_image_pose=False)
    assert len(in_front) >= 40 and len(inside) >= 30
    # Boxes partly outside the image are clipped by Waymo; beyond the distortion model's valid radius
    # a few clipped corners disagree wildly, so the median is the measure (about 0.14 px here).
    assert np.median(in_front) < 0.5
    assert np.median(inside) < 0.5 and max(inside) < 1.0  # about 0.13 px median, 0.33 px max
    # Using each image's own vehicle pose (Waymo projects at image time) halves the error (about 0.06 px);
    # the rest is the rolling shutter, which this comparison does not model.
    _, inside_posed = _projection_errors(frame, use_image_pose=True)
    assert np.median(inside_posed) < np.median(inside)
