"""LiDAR model: Waymo v1 range-image conventions, round trips, per-pixel pose, intensity encodings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivetl.calib import IntensityEncoding, LidarModel, make_transform, rotation_from_rpy
from drivetl.errors import RigError


def _lidar(yaw=0.7, offsets=False, h=16, w=360, rng_seed=0) -> LidarModel:
    rng = np.random.default_rng(rng_seed)
    inc = np.sort(np.radians(rng.uniform(-25.0, 10.0, h)))
    return LidarModel(
        name="TOP",
        model="test",
        vehicle_from_lidar=make_transform(rotation_from_rpy(0.02, -0.03, yaw), [1.4, 0.1, 2.1]),
        inclinations=inc,
        columns=w,
        max_range=80.0,
        azimuth_offsets=np.radians(rng.uniform(-0.1, 0.1, h)) if offsets else None,
    )


def test_uniform_inclinations_follow_waymos_rule() -> None:
    inc = LidarModel.uniform_inclinations(4, -2.0, 2.0)
    np.testing.assert_allclose(inc, [-1.5, -0.5, 0.5, 1.5])


def test_row_and_column_conventions_by_hand() -> None:
    # sensor yawed by 90 degrees: az_correction = pi/2
    lidar = LidarModel(
        "TOP", "t", make_transform(rotation_from_rpy(0, 0, math.pi / 2), [0, 0, 0]), [-0.1, 0.0, 0.2], 4, 50.0
    )
    assert lidar.az_correction == pytest.approx(math.pi / 2)
    np.testing.assert_allclose(lidar.row_inclinations(), [0.2, 0.0, -0.1])  # highest beam first
    # W = 4: ((4 - c - 0.5) / 4 * 2 - 1) * pi - pi/2
    np.testing.assert_allclose(
        lidar.column_azimuths(), [np.pi / 4, -np.pi / 4, -3 * np.pi / 4, -5 * np.pi / 4]
    )
    image = np.zeros((3, 4), dtype=np.float32)
    image[1, 0] = 10.0  # inclination 0, sensor azimuth pi/4 -> vehicle azimuth 3 pi/4 (backwards-left)
    points, (rows, cols) = lidar.range_image_to_points(image)
    s = 10.0 * math.sqrt(0.5)
    np.testing.assert_allclose(points, [[-s, s, 0.0]], atol=1e-12)
    assert rows.tolist() == [1] and cols.tolist() == [0]
    dirs = lidar.beam_directions()
    assert dirs.shape == (3, 4, 3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0)
    np.testing.assert_allclose(dirs[1, 0], [math.sqrt(0.5), math.sqrt(0.5), 0.0], atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.floats(-math.pi, math.pi), st.booleans(), st.integers(0, 10_000))
def test_range_image_points_range_image_round_trip(yaw, offsets, seed) -> None:
    lidar = _lidar(yaw=yaw, offsets=offsets, rng_seed=seed)
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.5, 80.0, (lidar.rows, lidar.columns)).astype(np.float32)
    image[rng.random(image.shape) < 0.4] = 0.0
    points, (rows, cols) = lidar.range_image_to_points(image)
    assert len(points) == int((image > 0).sum())
    # row-major order over the kept pixels, as Waymo's tf.where
    assert np.all(np.diff(rows * lidar.columns + cols) > 0)
    back, index = lidar.points_to_range_image(points, return_index=True)
    np.testing.assert_allclose(back, image, rtol=1e-6)
    np.testing.assert_array_equal(index[rows, cols], np.arange(len(points)))


def test_points_to_range_image_keeps_the_nearest_and_drops_out_of_range() -> None:
    lidar = LidarModel("L", "t", np.eye(4), np.radians([-1.0, 0.0, 1.0]), 360, 50.0, min_range=1.0)
    pts = np.array([[10.0, 0.0, 0.0], [5.0, 0.0, 0.0], [60.0, 0.0, 0.0], [0.5, 0.0, 0.0], [10.0, 0.0, 5.0]])
    image, index = lidar.points_to_range_image(pts, return_index=True)
    assert (image > 0).sum() == 1
    r, c = np.argwhere(image > 0)[0]
    assert image[r, c] == 5.0 and index[r, c] == 1 and r == 1
    assert c in (179, 180)  # azimuth 0 sits on the border of the two middle columns


def test_per_pixel_pose_hand_computed() -> None:
    # identity mount; one return at row 0 (inclination 0), straight ahead of the sensor (azimuth 0)
    lidar = LidarModel("TOP", "t", np.eye(4), [0.0], 4, 100.0)
    image = np.zeros((1, 4), dtype=np.float32)
    col = 1  # W = 4, az_correction = 0: column 1 has azimuth ((4 - 1.5) / 4 * 2 - 1) * pi = pi / 4
    image[0, col] = 10.0
    world_from_vehicle = make_transform(np.eye(3), [100.0, 0.0, 0.0])
    pose = np.tile(world_from_vehicle, (1, 4, 1, 1))
    # when this pixel fired, the car was 2 m further back and yawed 90 degrees left
    pose[0, col] = make_transform(rotation_from_rpy(0, 0, math.pi / 2), [98.0, 0.0, 0.0])
    points, _ = lidar.range_image_to_points(image, pixel_pose=pose, world_from_vehicle=world_from_vehicle)
    s = 10.0 * math.sqrt(0.5)
    # sensor (s, s, 0) -> yawed 90 deg: (-s, s, 0) -> world (98 - s, s, 0) -> vehicle (-2 - s, s, 0)
    np.testing.assert_allclose(points, [[-2.0 - s, s, 0.0]], atol=1e-12)
    static, _ = lidar.range_image_to_points(image)
    np.testing.assert_allclose(static, [[s, s, 0.0]], atol=1e-12)
    with pytest.raises(ValueError, match="world_from_vehicle"):
        lidar.range_image_to_points(image, pixel_pose=pose)


def test_intensity_encodings() -> None:
    u8 = IntensityEncoding("uint8", 255)
    raw = np.array([0, 51, 255], dtype=np.uint8)
    canon = u8.to_canonical(raw)
    assert canon.dtype == np.float32
    np.testing.assert_allclose(canon, [0.0, 0.2, 1.0], atol=1e-7)
    np.testing.assert_array_equal(u8.from_canonical(canon), raw)
    tanh = IntensityEncoding("float", 1.0, "tanh")
    raw_f = np.array([0.0, 0.5, 3.0, 1e6, np.nan], dtype=np.float32)
    canon = tanh.to_canonical(raw_f)
    assert np.all((canon >= 0) & (canon <= 1))
    np.testing.assert_allclose(canon[:3], np.tanh(raw_f[:3]), rtol=1e-6)
    assert canon[4] == 0.0
    np.testing.assert_allclose(tanh.from_canonical(canon[:3]), raw_f[:3], rtol=1e-4)
    with pytest.raises(RigError, match="does not fit uint8"):
        IntensityEncoding("uint8", 1000)
    with pytest.raises(RigError, match="not one of"):
        IntensityEncoding("int4", 1)


def test_invalid_lidars_are_rejected() -> None:
    with pytest.raises(RigError, match="strictly ascending"):
        LidarModel("L", "t", np.eye(4), [0.1, 0.0], 10, 50.0)
    with pytest.raises(RigError, match="one finite value per beam"):
        LidarModel("L", "t", np.eye(4), [0.0, 0.1], 10, 50.0, azimuth_offsets=[0.0])
    with pytest.raises(RigError, match="min_range < max_range"):
        LidarModel("L", "t", np.eye(4), [0.0], 10, 50.0, min_range=60.0)
    with pytest.raises(RigError, match="returns"):
        LidarModel("L", "t", np.eye(4), [0.0], 10, 50.0, returns=3)
