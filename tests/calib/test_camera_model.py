"""Camera model: project/unproject round trips with distortion, the distortion inverse, frames, torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drivetl.calib import OPTICAL_FROM_CAMERA, CameraModel, make_transform, rotation_from_rpy
from drivetl.errors import DataError, RigError

#: distortions like those of the shipped rigs: Waymo-like, wide-angle barrel, mild, with tangential terms
DISTORTIONS = [
    (0.04, -0.33, 0.001, -0.001, 0.0),
    (-0.30, 0.09, 0.0005, -0.0003, -0.01),
    (-0.12, 0.03, 0.0, 0.0, 0.0),
    (0.0, 0.0, 0.0, 0.0, 0.0),
]


def _camera(dist=DISTORTIONS[0], fx=None, rpy=(0.01, 0.05, 0.3), t=(1.5, 0.1, 1.6)) -> CameraModel:
    """A 1920x1080 camera; the Waymo-like distortion comes with Waymo's long focal length."""
    k1, k2, p1, p2, k3 = dist
    if fx is None:
        fx = 2050.0 if dist == DISTORTIONS[0] else 1000.0
    return CameraModel(
        "FRONT",
        1920,
        1080,
        fx,
        fx * 1.01,
        955.0,
        545.0,
        k1,
        k2,
        p1,
        p2,
        k3,
        vehicle_from_camera=make_transform(rotation_from_rpy(*rpy), t),
    )


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(DISTORTIONS),
    st.lists(
        st.tuples(st.floats(0, 1919.99), st.floats(0, 1079.99), st.floats(0.5, 200.0)),
        min_size=1,
        max_size=50,
    ),
)
def test_unproject_then_project_round_trips_below_1e3_px(dist, samples) -> None:
    cam = _camera(dist)
    arr = np.array(samples)
    uv, depth = arr[:, :2], arr[:, 2]
    points = cam.unproject(uv, depth)
    uv2, depth2, inside = cam.project(points)
    assert np.abs(uv2 - uv).max() < 1e-3
    np.testing.assert_allclose(depth2, depth, rtol=1e-12)
    # a pixel that was inside stays inside unless rounding pushes it across the border
    assert inside[(uv[:, 0] > 1e-6) & (uv[:, 1] > 1e-6)].all()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(DISTORTIONS), st.floats(-0.8, 0.8), st.floats(-0.5, 0.5))
def test_undistort_inverts_distort(dist, x, y) -> None:
    cam = _camera(dist)
    # beyond the valid radius the polynomial folds back (another ray maps to the same pixel), so the
    # inverse is only defined inside it; undistort answers with the ray inside
    assume(math.hypot(x, y) < 0.999 * cam.max_valid_radius)
    xy = np.array([[x, y]])
    back = cam.undistort(cam.distort(xy))
    # 1e-9 in normalized coordinates is 1e-6 px at fx = 1000
    np.testing.assert_allclose(back, xy, atol=1e-9)


def test_undistort_beyond_the_valid_radius_returns_the_ray_inside() -> None:
    cam = _camera(DISTORTIONS[0])  # k2 < 0: the radial polynomial folds back at r = 0.903
    outside = np.array([[0.78125, 0.5]])  # r = 0.93
    back = cam.undistort(cam.distort(outside))
    assert np.hypot(*back[0]) < cam.max_valid_radius
    np.testing.assert_allclose(cam.distort(back), cam.distort(outside), atol=1e-9)


def test_distortion_inverse_accuracy_over_the_whole_image() -> None:
    for dist in DISTORTIONS:
        cam = _camera(dist)
        u, v = np.meshgrid(np.linspace(0, cam.width, 97), np.linspace(0, cam.height, 61))
        xd = np.stack([(u.ravel() - cam.cx) / cam.fx, (v.ravel() - cam.cy) / cam.fy], axis=1)
        err_px = np.abs(cam.distort(cam.undistort(xd)) - xd).max() * cam.fx
        assert err_px < 1e-6, (dist, err_px)


def test_project_known_point_and_frames() -> None:
    cam = CameraModel("F", 640, 480, 500.0, 500.0, 320.0, 240.0)
    # 10 m ahead, 1 m left, 2 m up in the camera (= vehicle) frame: left is -x_opt, up is -y_opt
    uv, depth, inside = cam.project(np.array([[10.0, 1.0, 2.0], [-5.0, 0.0, 0.0], [10.0, 0.0, 0.0]]))
    np.testing.assert_allclose(uv[0], [320.0 - 50.0, 240.0 - 100.0])
    np.testing.assert_allclose(depth, [10.0, -5.0, 10.0])
    assert inside.tolist() == [True, False, True]
    np.testing.assert_allclose(OPTICAL_FROM_CAMERA[:3, :3] @ [1.0, 2.0, 3.0], [-2.0, -3.0, 1.0])
    np.testing.assert_allclose(cam.K, [[500, 0, 320], [0, 500, 240], [0, 0, 1]])
    np.testing.assert_allclose(cam.optical_from_vehicle, OPTICAL_FROM_CAMERA)


def test_points_beyond_the_valid_radius_are_not_in_the_image() -> None:
    # k1 < 0 alone folds back: r (1 + k1 r^2) peaks at r = 1/sqrt(3 |k1|)
    cam = _camera((-0.3, 0.0, 0.0, 0.0, 0.0), rpy=(0, 0, 0), t=(0, 0, 0))
    assert cam.max_valid_radius == pytest.approx(1 / math.sqrt(0.9), abs=1e-3)
    far_off_axis = np.array([[1.0, 1.9, 0.0]])  # 62 degrees to the left: folds back into the image
    uv, _, inside = cam.project(far_off_axis)
    assert 0 <= uv[0, 0] < cam.width and not inside[0]


def test_torch_inputs_keep_dtype_and_match_numpy() -> None:
    cam = _camera(DISTORTIONS[1])
    rng = np.random.default_rng(3)
    pts = rng.uniform([2.0, -20.0, -3.0], [60.0, 20.0, 5.0], size=(500, 3))
    uv, depth, inside = cam.project(pts)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 5e-3)):
        uv_t, depth_t, inside_t = cam.project(torch.tensor(pts, dtype=dtype))
        assert uv_t.dtype == dtype and depth_t.dtype == dtype and inside_t.dtype == torch.bool
        np.testing.assert_allclose(uv_t.numpy()[inside], uv[inside], atol=tol)
        assert (inside_t.numpy() == inside).mean() > 0.99
    back = cam.unproject(torch.tensor(uv), torch.tensor(depth))
    assert isinstance(back, torch.Tensor)
    np.testing.assert_allclose(back.numpy()[inside], pts[inside], atol=1e-6)


def test_torch_project_is_differentiable() -> None:
    cam = _camera(DISTORTIONS[0])
    pts = torch.tensor([[10.0, 1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    uv, _, _ = cam.project(pts)
    uv.sum().backward()
    assert pts.grad is not None and torch.isfinite(pts.grad).all()


def test_image_size_check_scaling_and_fov() -> None:
    cam = _camera(DISTORTIONS[2])
    cam.check_image_size(1920, 1080, "frame 3 camera FRONT")
    with pytest.raises(DataError, match=r"frame 3 camera FRONT: image is 960x540 .* 1920x1080"):
        cam.check_image_size(960, 540, "frame 3 camera FRONT")
    half = cam.scaled(0.5, 0.5)
    assert (half.width, half.height) == (960, 540)
    pts = np.array([[20.0, 3.0, 1.0]])
    np.testing.assert_allclose(half.project(pts)[0], cam.project(pts)[0] * 0.5, atol=1e-9)
    moved = cam.with_vehicle_from_camera(np.eye(4))
    np.testing.assert_array_equal(moved.vehicle_from_camera, np.eye(4))
    assert moved.fx == cam.fx
    hfov, vfov = CameraModel("p", 200, 100, 100.0, 100.0, 100.0, 50.0).fov_deg()
    assert hfov == pytest.approx(90.0) and vfov == pytest.approx(2 * math.degrees(math.atan(0.5)))


def test_pixels_no_ray_reaches_unproject_to_nan() -> None:
    # with fx = 1000 the Waymo-like k2 = -0.33 cannot reach the image corners: r_d peaks near 0.73
    cam = _camera(DISTORTIONS[0], fx=1000.0)
    pts = cam.unproject(np.array([[0.0, 0.0], [955.0, 545.0]]), np.array([10.0, 10.0]))
    assert np.isnan(pts[0]).all() and np.isfinite(pts[1]).all()
    pts_t = cam.unproject(torch.tensor([[0.0, 0.0], [955.0, 545.0]]), torch.tensor([10.0, 10.0]))
    assert torch.isnan(pts_t[0]).all() and torch.isfinite(pts_t[1]).all()


def test_invalid_cameras_are_rejected() -> None:
    with pytest.raises(RigError, match="focal"):
        CameraModel("F", 10, 10, -1.0, 1.0, 5.0, 5.0)
    with pytest.raises(RigError, match="rolling shutter"):
        CameraModel("F", 10, 10, 1.0, 1.0, 5.0, 5.0, rolling_shutter_direction="SIDEWAYS")
    with pytest.raises(RigError, match="4x4"):
        CameraModel("F", 10, 10, 1.0, 1.0, 5.0, 5.0, vehicle_from_camera=np.eye(3))
