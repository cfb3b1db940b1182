"""Exact overlap of rotated 3D boxes: bird's-eye-view (BEV) and 3D intersection over union.

Boxes follow the project convention: (M, 7) `x, y, z, length, width, height, heading` in the
vehicle frame, metres and radians; (x, y, z) is the box centre, length runs along the heading,
heading is the yaw about +z counter-clockwise from +x.

The BEV intersection of two boxes is the intersection of two convex rectangles. It is computed
exactly (up to floating point, no rasterization) as the convex polygon whose vertices are the
corners of each rectangle lying inside the other plus the crossings of their edges; its vertices
are ordered by angle around their mean and its area is given by the shoelace formula. All pairs
are handled at once with numpy; pairs whose circumscribed circles do not touch are skipped.
The 3D intersection volume is the BEV intersection area times the overlap of the z extents.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

# Relative tolerance for "on the boundary" decisions (corner inside the other box, edge crossing).
_EPS = 1e-9
# Candidate pairs handled per vectorized chunk (bounds temporary memory to a few tens of MB).
_CHUNK = 8192


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    if hasattr(boxes, "detach"):  # a torch tensor
        boxes = boxes.detach().cpu().numpy()
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 7:
        if b.size == 0:
            return b.reshape(0, 7)
        raise ValueError(
            f"{name}: expected (M, 7) boxes x, y, z, length, width, height, heading; got {b.shape}"
        )
    return b


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """BEV corners of boxes, counter-clockwise.

    boxes: (M, 7) float, vehicle frame (metres, radians). Returns (M, 4, 2) float64 x, y of the
    corners front-left, rear-left, rear-right, front-right (counter-clockwise seen from +z).
    """
    b = _as_boxes(boxes, "boxes")
    half_l, half_w = b[:, 3:4] / 2.0, b[:, 4:5] / 2.0
    local_x = np.concatenate([half_l, -half_l, -half_l, half_l], axis=1)  # (M, 4)
    local_y = np.concatenate([half_w, half_w, -half_w, -half_w], axis=1)
    cos, sin = np.cos(b[:, 6:7]), np.sin(b[:, 6:7])
    x = b[:, 0:1] + cos * local_x - sin * local_y
    y = b[:, 1:2] + sin * local_x + cos * local_y
    return np.stack([x, y], axis=-1)


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether points (K, n, 2) lie in the BEV rectangles boxes (K, 7), boundary included -> (K, n)."""
    dx = points[..., 0] - boxes[:, None, 0]
    dy = points[..., 1] - boxes[:, None, 1]
    cos, sin = np.cos(boxes[:, None, 6]), np.sin(boxes[:, None, 6])
    u = cos * dx + sin * dy  # along the length
    v = -sin * dx + cos * dy  # along the width
    half_l, half_w = boxes[:, None, 3] / 2.0, boxes[:, None, 4] / 2.0
    tol = _EPS * (1.0 + half_l + half_w)
    return (np.abs(u) <= half_l + tol) & (np.abs(v) <= half_w + tol)


def _pair_intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BEV intersection areas of the pairs a[k], b[k] (both (K, 7)) -> (K,) float64, square metres."""
    k = a.shape[0]
    # Work relative to the first box's centre so that boxes far from the origin keep precision.
    origin = a[:, None, :2].copy()
    ca = box_corners_bev(a) - origin  # (K, 4, 2)
    cb = box_corners_bev(b) - origin
    a_rel = a.copy()
    a_rel[:, :2] = 0.0
    b_rel = b.copy()
    b_rel[:, :2] -= origin[:, 0]

    a_in_b = _inside(ca, b_rel)  # (K, 4)
    b_in_a = _inside(cb, a_rel)

    # Edge crossings: edge i of a (p + t r) against edge j of b (q + s u), t, s in [0, 1].
    p = ca[:, :, None, :]  # (K, 4, 1, 2)
    r = (np.roll(ca, -1, axis=1) - ca)[:, :, None, :]
    q = cb[:, None, :, :]  # (K, 1, 4, 2)
    u = (np.roll(cb, -1, axis=1) - cb)[:, None, :, :]
    denom = r[..., 0] * u[..., 1] - r[..., 1] * u[..., 0]  # (K, 4, 4)
    qp = q - p
    num_t = qp[..., 0] * u[..., 1] - qp[..., 1] * u[..., 0]
    num_s = qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]
    scale = np.abs(r[..., 0] * r[..., 0] + r[..., 1] * r[..., 1]) * np.abs(u[..., 0] ** 2 + u[..., 1] ** 2)
    parallel = np.abs(denom) <= _EPS * np.sqrt(scale) + 1e-300
    safe = np.where(parallel, 1.0, denom)
    t, s = num_t / safe, num_s / safe
    crossing = ~parallel & (t >= -_EPS) & (t <= 1 + _EPS) & (s >= -_EPS) & (s <= 1 + _EPS)
    cross_pts = p + t[..., None] * r  # (K, 4, 4, 2)

    pts = np.concatenate([ca, cb, cross_pts.reshape(k, 16, 2)], axis=1)  # (K, 24, 2)
    valid = np.concatenate([a_in_b, b_in_a, crossing.reshape(k, 16)], axis=1)  # (K, 24)
    count = valid.sum(axis=1)

    centre = (pts * valid[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]  # (K, 2)
    rel = pts - centre[:, None, :]
    angle = np.where(valid, np.arctan2(rel[..., 1], rel[..., 0]), np.inf)
    order = np.argsort(angle, axis=1, kind="stable")
    rel = np.take_along_axis(rel, order[..., None], axis=1)
    valid = np.take_along_axis(valid, order, axis=1)
    # Invalid slots (sorted last) repeat the first vertex: their shoelace terms vanish and the
    # polygon still closes from the last valid vertex back to the first.
    rel = np.where(valid[..., None], rel, rel[:, :1, :])
    nxt = np.roll(rel, -1, axis=1)
    twice_area = (rel[..., 0] * nxt[..., 1] - rel[..., 1] * nxt[..., 0]).sum(axis=1)
    area = 0.5 * np.abs(twice_area)
    return np.where(count >= 3, area, 0.0)


def bev_intersection_area(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise BEV intersection areas.

    boxes_a: (N, 7), boxes_b: (M, 7) float (numpy or torch), vehicle frame. Returns (N, M) float64
    in square metres.
    """
    a, b = _as_boxes(boxes_a, "boxes_a"), _as_boxes(boxes_b, "boxes_b")
    n, m = a.shape[0], b.shape[0]
    out = np.zeros((n, m), dtype=np.float64)
    if n == 0 or m == 0:
        return out
    radius_a = 0.5 * np.hypot(a[:, 3], a[:, 4])
    radius_b = 0.5 * np.hypot(b[:, 3], b[:, 4])
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    ia, ib = np.nonzero(dist <= radius_a[:, None] + radius_b[None, :] + 1e-9)
    for start in range(0, ia.size, _CHUNK):
        sa, sb = ia[start:start + _CHUNK], ib[start:start + _CHUNK]
        out[sa, sb] = _pair_intersection_area(a[sa], b[sb])
    return out


def bev_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise BEV IoU of rotated boxes: (N, 7), (M, 7) vehicle frame -> (N, M) float64 in [0, 1]."""
    a, b = _as_boxes(boxes_a, "boxes_a"), _as_boxes(boxes_b, "boxes_b")
    inter = bev_intersection_area(a, b)
    area_a, area_b = a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.clip(np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), 0.0, 1.0)


def iou_3d(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise 3D IoU of yaw-rotated boxes: (N, 7), (M, 7) vehicle frame -> (N, M) float64 in [0, 1].

    Intersection volume = BEV intersection area x overlap of [z - h/2, z + h/2]; union = the two
    volumes minus the intersection.
    """
    a, b = _as_boxes(boxes_a, "boxes_a"), _as_boxes(boxes_b, "boxes_b")
    inter_area = bev_intersection_area(a, b)
    top = np.minimum(a[:, None, 2] + a[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
    bottom = np.maximum(a[:, None, 2] - a[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2)
    inter = inter_area * np.clip(top - bottom, 0.0, None)
    vol_a, vol_b = a[:, 3] * a[:, 4] * a[:, 5], b[:, 3] * b[:, 4] * b[:, 5]
    union = vol_a[:, None] + vol_b[None, :] - inter
    return np.clip(np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), 0.0, 1.0)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, kind: Literal["3d", "bev"] = "3d") -> np.ndarray:
    """`iou_3d` or `bev_iou` by name: (N, 7), (M, 7) -> (N, M) float64."""
    match kind:
        case "3d":
            return iou_3d(boxes_a, boxes_b)
        case "bev":
            return bev_iou(boxes_a, boxes_b)
        case _:
            raise ValueError(f"IoU kind must be '3d' or 'bev', got {kind!r}")
