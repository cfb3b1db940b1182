"""Exact rotated-box IoU against hand-computed values and an independent polygon-clipping oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivetl.eval import bev_intersection_area, bev_iou, box_corners_bev, box_iou, iou_3d
from drivetl.eval._iou import _CHUNK


def _box(x=0.0, y=0.0, z=0.0, length=1.0, width=1.0, height=1.0, heading=0.0) -> np.ndarray:
    return np.array([[x, y, z, length, width, height, heading]], dtype=np.float64)


def _clip_area(subject: list[tuple[float, float]], clip: list[tuple[float, float]]) -> float:
    """Sutherland-Hodgman clipping of a convex polygon by a convex CCW polygon, then the shoelace area."""
    out = subject
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]

        def side(p, a=a, b=b):
            return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

        inp, out = out, []
        for j in range(len(inp)):
            cur, prev = inp[j], inp[j - 1]
            sc, sp = side(cur), side(prev)
            if sc >= 0:
                if sp < 0:
                    t = sp / (sp - sc)
                    out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
                out.append(cur)
            elif sp >= 0:
                t = sp / (sp - sc)
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
        if not out:
            return 0.0
    return 0.5 * abs(sum(out[k][0] * out[k - 1][1] - out[k - 1][0] * out[k][1] for k in range(len(out))))


def test_corners_are_counter_clockwise_and_follow_heading():
    # A 4 x 2 box at (1, 0) facing +y: its left is -x, so front-left is (x - w/2, y + l/2).
    c = box_corners_bev(_box(x=1.0, length=4.0, width=2.0, heading=math.pi / 2))[0]
    np.testing.assert_allclose(c, [[0.0, 2.0], [0.0, -2.0], [2.0, -2.0], [2.0, 2.0]], atol=1e-12)
    x, y = c[:, 0], c[:, 1]
    assert 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) == pytest.approx(8.0)  # CCW: positive area


def test_unit_squares_rotated_45_degrees_form_a_regular_octagon():
    a, b = _box(), _box(heading=math.pi / 4)
    inter = 2.0 * (math.sqrt(2.0) - 1.0)  # square minus four corner triangles of legs 1 - sqrt(2)/2
    assert bev_intersection_area(a, b)[0, 0] == pytest.approx(inter, abs=1e-12)
    assert bev_iou(a, b)[0, 0] == pytest.approx(inter / (2.0 - inter), abs=1e-12)
    assert bev_iou(a, b)[0, 0] == pytest.approx(1.0 / math.sqrt(2.0), abs=1e-12)
    assert iou_3d(a, b)[0, 0] == pytest.approx(1.0 / math.sqrt(2.0), abs=1e-12)  # same z extent


def test_offset_boxes():
    a = _box(length=2.0, width=2.0, height=2.0)
    b = _box(x=1.0, length=2.0, width=2.0, height=2.0)
    assert bev_iou(a, b)[0, 0] == pytest.approx(2.0 / 6.0, abs=1e-12)  # 1 x 2 overlap, union 4 + 4 - 2
    c = _box(x=1.0, y=1.0, length=2.0, width=2.0, height=2.0)
    assert bev_iou(a, c)[0, 0] == pytest.approx(1.0 / 7.0, abs=1e-12)  # 1 x 1 overlap
    # Touching edges and far apart: zero.
    assert bev_iou(a, _box(x=2.0, length=2.0, width=2.0))[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert bev_iou(a, _box(x=50.0, length=2.0, width=2.0))[0, 0] == 0.0


def test_offset_along_a_rotated_heading_far_from_origin():
    heading = 0.7
    a = _box(x=70.0, y=-40.0, z=1.0, length=4.0, width=2.0, height=1.5, heading=heading)
    b = a + [[2.0 * math.cos(heading), 2.0 * math.sin(heading), 0, 0, 0, 0, 0]]
    assert bev_iou(a, b)[0, 0] == pytest.approx(4.0 / 12.0, abs=1e-9)  # half the length overlaps


def test_z_offset_and_height_difference():
    a = _box(length=2.0, width=2.0, height=2.0)
    # Same footprint, shifted up by h/3: overlap 4/3 of 2 -> IoU (h - d) / (h + d) = 1/2.
    assert iou_3d(a, a + [[0, 0, 2.0 / 3.0, 0, 0, 0, 0]])[0, 0] == pytest.approx(0.5, abs=1e-12)
    assert bev_iou(a, a + [[0, 0, 2.0 / 3.0, 0, 0, 0, 0]])[0, 0] == pytest.approx(1.0)
    # Half the height, same centre: IoU = 1/2; no z overlap: 0.
    assert iou_3d(a, _box(length=2.0, width=2.0, height=1.0))[0, 0] == pytest.approx(0.5, abs=1e-12)
    assert iou_3d(a, a + [[0, 0, 3.0, 0, 0, 0, 0]])[0, 0] == 0.0
    # 2 x 2 squares 45 degrees apart (octagon of area 4 * 2(sqrt 2 - 1)), shifted up by h/3.
    b = _box(z=2.0 / 3.0, length=2.0, width=2.0, height=2.0, heading=math.pi / 4)
    inter = 4.0 * 2.0 * (math.sqrt(2.0) - 1.0) * (4.0 / 3.0)  # area x z overlap; volumes 8 + 8
    assert iou_3d(a, b)[0, 0] == pytest.approx(inter / (16.0 - inter), abs=1e-12)


def test_identity_heading_flip_symmetry_and_containment():
    a = _box(x=3.0, y=-2.0, length=4.5, width=1.9, height=1.6, heading=0.3)
    assert iou_3d(a, a)[0, 0] == pytest.approx(1.0)
    assert iou_3d(a, a + [[0, 0, 0, 0, 0, 0, math.pi]])[0, 0] == pytest.approx(1.0)  # same box
    inner = _box(x=3.0, y=-2.0, length=2.25, width=0.95, height=1.6, heading=0.3)
    assert bev_iou(a, inner)[0, 0] == pytest.approx(0.25, abs=1e-12)  # contained: area ratio


def test_shapes_empty_inputs_and_torch():
    a = np.zeros((0, 7))
    assert bev_iou(a, _box()).shape == (0, 1)
    assert iou_3d(_box(), a).shape == (1, 0)
    t = torch.tensor(np.r_[_box(), _box(heading=math.pi / 4)], dtype=torch.float32)
    out = box_iou(t, t, "bev")
    assert out.shape == (2, 2) and out.dtype == np.float64
    assert out[0, 1] == pytest.approx(1.0 / math.sqrt(2.0), abs=1e-6)
    with pytest.raises(ValueError, match="IoU kind"):
        box_iou(t, t, "2d")
    with pytest.raises(ValueError, match=r"\(M, 7\)"):
        bev_iou(np.zeros((2, 5)), _box())


_coord = st.floats(-3.0, 3.0, allow_nan=False)
_size = st.floats(0.2, 4.0, allow_nan=False)
_angle = st.floats(-math.pi, math.pi, allow_nan=False)
_box_st = st.tuples(_coord, _coord, _coord, _size, _size, _size, _angle)


def _diagonal_neighbour(box: tuple, dx: float, dy: float, **changes: float) -> tuple:
    """`box` moved by (dx, dy) in its own length/width axes, with some fields changed."""
    x, y, z, length, width, height, heading = box
    c, s = math.cos(heading), math.sin(heading)
    fields = dict(x=x + c * dx - s * dy, y=y + s * dx + c * dy, z=z, length=length, width=width,
                  height=height, heading=heading)
    fields.update(changes)
    return tuple(fields[k] for k in ("x", "y", "z", "length", "width", "height", "heading"))


# Boxes whose footprints overlap only in a small region around a corner: their centres are farther
# apart than the sum of max(length, width) / 2, but not of the circumscribed radii hypot(l, w) / 2.
_UNIT = (0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0)
_TILTED = (-1.0, 0.5, 0.2, 1.0, 1.0, 1.0, 0.7)
_SQUARE = (0.5, -0.5, 0.0, 2.0, 2.0, 1.5, -2.0)
_CORNER_CASES = [
    ([_UNIT], [_diagonal_neighbour(_UNIT, 0.9, 0.9)]),  # 0.1 x 0.1 overlap
    ([_TILTED], [_diagonal_neighbour(_TILTED, 0.95, -0.95)]),  # same, rotated, 0.05 x 0.05
    ([_SQUARE], [_diagonal_neighbour(_SQUARE, -1.4, 1.4, length=1.0, width=1.0)]),  # 2x2 and 1x1
    ([_UNIT, _SQUARE], [_diagonal_neighbour(_SQUARE, 1.45, 1.45, length=1.0, width=1.0, z=0.3)]),
]


@settings(max_examples=60, deadline=None)
@given(st.lists(_box_st, min_size=1, max_size=5), st.lists(_box_st, min_size=1, max_size=5))
@example(*_CORNER_CASES[0])
@example(*_CORNER_CASES[1])
@example(*_CORNER_CASES[2])
@example(*_CORNER_CASES[3])
def test_matches_polygon_clipping_oracle(boxes_a, boxes_b):
    a, b = np.array(boxes_a), np.array(boxes_b)
    areas = bev_intersection_area(a, b)
    ca, cb = box_corners_bev(a), box_corners_bev(b)
    for i in range(len(a)):
        for j in range(len(b)):
            expected = _clip_area([tuple(p) for p in ca[i]], [tuple(p) for p in cb[j]])
            assert areas[i, j] == pytest.approx(expected, abs=1e-9, rel=1e-9)
    ious = iou_3d(a, b)
    np.testing.assert_allclose(ious, iou_3d(b, a).T, atol=1e-12)
    assert np.all((ious >= 0) & (ious <= 1))


def test_many_boxes_at_once_match_pairwise_calls():
    rng = np.random.default_rng(3)
    n = 300
    a = np.c_[rng.uniform(-20, 20, (n, 2)), rng.uniform(0, 2, n), rng.uniform(0.5, 5, (n, 3)),
              rng.uniform(-math.pi, math.pi, n)]
    b = a + rng.normal(0, 0.4, a.shape)
    b[:, 3:6] = np.abs(b[:, 3:6]) + 0.1
    full = iou_3d(a, b)
    assert full.shape == (n, n) and (full > 0).sum() > n
    for i in rng.integers(0, n, 10):
        np.testing.assert_allclose(full[i], iou_3d(a[i:i + 1], b)[0], atol=1e-12)


@pytest.mark.parametrize(
    ("case", "area"),
    zip(_CORNER_CASES, [0.1**2, 0.05**2, 0.1**2, 0.05**2], strict=True),
    ids=["unit-squares", "rotated", "unequal-squares", "second-row"],
)
def test_corner_overlaps_are_found(case, area):
    # The examples above are what they claim: squares sharing a heading whose corners overlap in a
    # small square (side: half the sum of their sides minus the offset along each axis), with
    # centres beyond the reach of max(length, width) / 2 but within the circumscribed circles.
    a, b = np.array(case[0][-1:]), np.array(case[1])
    dist = np.hypot(*(a[0, :2] - b[0, :2]))
    circumscribed = (np.hypot(*a[0, 3:5]) + np.hypot(*b[0, 3:5])) / 2
    assert a[0, 3:5].max() / 2 + b[0, 3:5].max() / 2 < dist < circumscribed
    assert bev_intersection_area(a, b)[0, 0] == pytest.approx(area, rel=1e-6)
    assert bev_intersection_area(np.array(case[0]), b)[-1, 0] == pytest.approx(area, rel=1e-6)


def test_more_candidate_pairs_than_one_chunk():
    # 1,000 boxes packed close together give several chunks of candidate pairs; each box's own
    # match (a slightly moved copy) must come out as the clipping oracle and a call for that pair alone.
    rng = np.random.default_rng(7)
    n = 1000
    a = np.c_[rng.uniform(-15, 15, (n, 2)), rng.uniform(0, 2, n), rng.uniform(1, 5, (n, 3)),
              rng.uniform(-math.pi, math.pi, n)]
    b = a + np.c_[rng.normal(0, 0.3, (n, 3)), np.zeros((n, 3)), rng.normal(0, 0.1, n)]
    radius_a, radius_b = np.hypot(a[:, 3], a[:, 4]) / 2, np.hypot(b[:, 3], b[:, 4]) / 2
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    assert (dist <= radius_a[:, None] + radius_b[None, :]).sum() > 3 * _CHUNK
    ca, cb = box_corners_bev(a), box_corners_bev(b)
    clipped = [_clip_area([tuple(p) for p in ca[i]], [tuple(p) for p in cb[i]]) for i in range(n)]
    np.testing.assert_allclose(np.diag(bev_intersection_area(a, b)), clipped, rtol=1e-9, atol=1e-9)
    full = iou_3d(a, b)
    alone = np.array([iou_3d(a[i:i + 1], b[i:i + 1])[0, 0] for i in range(n)])
    assert (alone > 0).all()
    np.testing.assert_allclose(np.diag(full), alone, atol=1e-12)
    # Whole rows and columns (pairs spread over every chunk) agree with one-row calls too.
    for i in rng.integers(0, n, 5):
        np.testing.assert_allclose(full[i], iou_3d(a[i:i + 1], b)[0], atol=1e-12)
        np.testing.assert_allclose(full[:, i], iou_3d(a, b[i:i + 1])[:, 0], atol=1e-12)
