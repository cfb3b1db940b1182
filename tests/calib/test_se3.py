"""Rigid transforms: round trips, both quaternion orders, roll/pitch/yaw, rigidity checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from drivetl.calib import se3
from drivetl.errors import RigError

angle = st.floats(-math.pi, math.pi, allow_nan=False)
coord = st.floats(-100.0, 100.0, allow_nan=False)
quat = st.tuples(*[st.floats(-1.0, 1.0, allow_nan=False)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1)


def _transform(rpy, t) -> np.ndarray:
    return se3.make_transform(se3.rotation_from_rpy(*rpy), t)


@settings(max_examples=100, deadline=None)
@given(st.tuples(angle, angle, angle), st.tuples(coord, coord, coord), st.tuples(coord, coord, coord))
def test_invert_and_transform_round_trip(rpy, t, p) -> None:
    a_from_b = _transform(rpy, t)
    b_from_a = se3.invert(a_from_b)
    np.testing.assert_allclose(a_from_b @ b_from_a, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(se3.invert(b_from_a), a_from_b, atol=1e-12)
    pts = np.array([p, [0.0, 0.0, 0.0]])
    back = se3.transform_points(b_from_a, se3.transform_points(a_from_b, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.tuples(angle, angle, angle), st.tuples(angle, angle, angle), st.tuples(coord, coord, coord))
def test_compose_is_the_matrix_product(rpy1, rpy2, t) -> None:
    a_from_b, b_from_c = _transform(rpy1, t), _transform(rpy2, t[::-1])
    p = np.array([[1.0, -2.0, 3.0]])
    direct = se3.transform_points(a_from_b, se3.transform_points(b_from_c, p))
    np.testing.assert_allclose(se3.transform_points(se3.compose(a_from_b, b_from_c), p), direct, atol=1e-9)
    np.testing.assert_array_equal(se3.compose(), np.eye(4))


@settings(max_examples=100, deadline=None)
@given(quat)
def test_quaternion_orders_agree_and_round_trip(q) -> None:
    w, x, y, z = q
    r_wxyz = se3.rotation_from_quaternion_wxyz([w, x, y, z])
    r_xyzw = se3.rotation_from_quaternion_xyzw([x, y, z, w])
    np.testing.assert_allclose(r_wxyz, r_xyzw, atol=1e-12)
    np.testing.assert_allclose(r_wxyz @ r_wxyz.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r_wxyz) == pytest.approx(1.0)
    q_back = se3.quaternion_wxyz_from_rotation(r_wxyz)
    q_unit = np.array(q) / np.linalg.norm(q)
    q_unit = -q_unit if q_unit[0] < 0 else q_unit
    assert q_back[0] >= 0
    # q and -q are the same rotation; compare up to that sign
    assert min(np.abs(q_back - q_unit).max(), np.abs(q_back + q_unit).max()) < 1e-9


def test_quaternion_known_values() -> None:
    # 90 degrees about z: x -> y
    s = math.sqrt(0.5)
    r = se3.rotation_from_quaternion_wxyz([s, 0.0, 0.0, s])
    np.testing.assert_allclose(r @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(se3.rotation_from_quaternion_xyzw([0.0, 0.0, s, s]), r, atol=1e-15)


@settings(max_examples=100, deadline=None)
@given(angle, st.floats(-1.55, 1.55), angle)
def test_rpy_round_trip(roll, pitch, yaw) -> None:
    r = se3.rotation_from_rpy(roll, pitch, yaw)
    back = se3.rpy_from_rotation(r)
    np.testing.assert_allclose(se3.rotation_from_rpy(*back), r, atol=1e-12)
    np.testing.assert_allclose(np.cos(np.subtract(back, (roll, pitch, yaw))), 1.0, atol=1e-9)


def test_rpy_order_and_gimbal_lock() -> None:
    roll, pitch, yaw = 0.1, -0.2, 0.3
    rx = np.array([[1, 0, 0], [0, math.cos(roll), -math.sin(roll)], [0, math.sin(roll), math.cos(roll)]])
    ry = np.array([[math.cos(pitch), 0, math.sin(pitch)], [0, 1, 0], [-math.sin(pitch), 0, math.cos(pitch)]])
    rz = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    np.testing.assert_allclose(se3.rotation_from_rpy(roll, pitch, yaw), rz @ ry @ rx, atol=1e-15)
    # positive pitch tilts the sensor's x axis down (nose down)
    assert (se3.rotation_from_rpy(0.0, math.radians(2.0), 0.0) @ [1.0, 0.0, 0.0])[2] < 0
    r = se3.rotation_from_rpy(0.4, math.pi / 2, 0.7)
    np.testing.assert_allclose(se3.rotation_from_rpy(*se3.rpy_from_rotation(r)), r, atol=1e-9)


def test_transform_points_keeps_extra_columns_and_torch_dtype() -> None:
    m = _transform((0.0, 0.0, math.pi / 2), (1.0, 2.0, 3.0))
    pts = np.array([[1.0, 0.0, 0.0, 0.7], [0.0, 0.0, 0.0, 0.2]], dtype=np.float32)
    out = se3.transform_points(m, pts)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_allclose(out, [[1.0, 3.0, 3.0, 0.7], [1.0, 2.0, 3.0, 0.2]], atol=1e-6)
    t = torch.tensor(pts, dtype=torch.float64)
    out_t = se3.transform_points(m, t)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-6)


def test_check_rigid_errors_name_the_place() -> None:
    good = _transform((0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    np.testing.assert_array_equal(se3.check_rigid(good, "x"), good)
    squashed = good.copy()
    squashed[:3, :3] *= np.array([1.0, 0.93, 1.0])
    with pytest.raises(
        RigError,
        match=r"^rig\.yaml: lidars\[0\]\.vehicle_from_sensor: rotation is not orthonormal \(det=0\.93",
    ):
        se3.check_rigid(squashed, "rig.yaml: lidars[0].vehicle_from_sensor")
    mirrored = np.diag([1.0, -1.0, 1.0, 1.0])
    with pytest.raises(RigError, match="reflection"):
        se3.check_rigid(mirrored, "where")
    with pytest.raises(RigError, match="4x4"):
        se3.check_rigid(np.eye(3), "where")
    bad_row = np.eye(4)
    bad_row[3, 0] = 1.0
    with pytest.raises(RigError, match="last row"):
        se3.check_rigid(bad_row, "where")


def test_vectorized_rpy_xyz_matches_the_scalar_builder() -> None:
    rng = np.random.default_rng(7)
    rows = np.c_[rng.uniform(-3, 3, (5, 3)), rng.uniform(-50, 50, (5, 3))]
    image = rows.reshape(1, 5, 6)
    out = se3.transforms_from_rpy_xyz(image)
    assert out.shape == (1, 5, 4, 4)
    for i, row in enumerate(rows):
        np.testing.assert_allclose(out[0, i], _transform(row[:3], row[3:]), atol=1e-14)
