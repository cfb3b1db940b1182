"""Global augmentation keeps points, boxes and cameras consistent; beam dropout; seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivetl.data.augment import AugmentConfig, augment, beam_dropout, transform_sample
from drivetl.data.synthetic import synthetic_sample


def _inside(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    d = points[:, :3] - box[:3]
    c, s = math.cos(box[6]), math.sin(box[6])
    along, across = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
    return (
        (np.abs(along) <= box[3] / 2 + 1e-3)
        & (np.abs(across) <= box[4] / 2 + 1e-3)
        & (np.abs(d[:, 2]) <= box[5] / 2 + 1e-3)
    )


@pytest.mark.parametrize("flip_x,flip_y", [(False, False), (False, True), (True, False), (True, True)])
def test_points_boxes_and_cameras_stay_consistent(flip_x: bool, flip_y: bool) -> None:
    s = synthetic_sample(3, num_boxes=4, ground_points=300)
    out = transform_sample(s, yaw=0.7, scale=1.08, flip_x=flip_x, flip_y=flip_y, translation=(0.4, -0.3, 0.1))
    # the same points are inside the same boxes
    for old_box, new_box in zip(s.boxes.boxes, out.boxes.boxes, strict=True):
        assert np.array_equal(_inside(s.points, old_box), _inside(out.points, new_box))
        assert -math.pi < new_box[6] <= math.pi
        assert np.allclose(new_box[3:6], old_box[3:6] * 1.08)
    # projection lands on the same pixel of the (mirrored when the world was mirrored once) image
    mirrored = flip_x != flip_y
    for old_cam, new_cam in zip(s.cameras, out.cameras, strict=True):
        det = np.linalg.det(new_cam.vehicle_from_camera[:3, :3])
        assert abs(det - 1.0) < 1e-9  # still a rigid mounting
        uv0, _, ok0 = old_cam.project(s.points[:, :3].astype(np.float64))
        uv1, _, ok1 = new_cam.project(out.points[:, :3].astype(np.float64))
        both = ok0 & ok1
        assert both.sum() > 50
        expect_u = old_cam.width - uv0[both, 0] if mirrored else uv0[both, 0]
        assert np.abs(uv1[both, 0] - expect_u).max() < 1e-2
        assert np.abs(uv1[both, 1] - uv0[both, 1]).max() < 1e-2
        img0, img1 = s.images[old_cam.name], out.images[new_cam.name]
        assert np.array_equal(img1, img0[:, ::-1] if mirrored else img0)


def test_seeded_and_varied() -> None:
    s = synthetic_sample(4, ground_points=300)
    cfg = AugmentConfig(flip_x=0.5, beam_dropout=0.5)
    a = augment(s, np.random.default_rng(7), cfg)
    b = augment(s, np.random.default_rng(7), cfg)
    c = augment(s, np.random.default_rng(8), cfg)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.boxes.boxes, b.boxes.boxes)
    assert not np.array_equal(a.boxes.boxes, c.boxes.boxes)


def test_beam_dropout_removes_whole_elevation_bins() -> None:
    s = synthetic_sample(5, ground_points=2000)
    out = beam_dropout(s, np.random.default_rng(0), share=0.5, bin_deg=0.5, origin=(0.0, 0.0, 1.9))
    assert 0 < len(out.points) < len(s.points)
    elev = lambda p: np.floor(np.degrees(np.arctan2(p[:, 2] - 1.9, np.hypot(p[:, 0], p[:, 1]))) / 0.5)  # noqa: E731
    kept_bins = set(elev(out.points).tolist())
    dropped = set(elev(s.points).tolist()) - kept_bins
    assert dropped and not (set(elev(out.points).tolist()) & dropped)
