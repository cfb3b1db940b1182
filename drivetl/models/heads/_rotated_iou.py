"""Bird's-eye-view IoU of rotated boxes and rotated-box NMS, in plain torch.

The intersection of two rectangles is a convex polygon whose vertices are among: the corners of
each rectangle inside the other, and the crossings of their edges (at most 4 + 4 + 16 candidates).
All candidates are computed at once for every pair, the valid ones are ordered by angle around
their centroid, and the shoelace formula gives the area. Fully vectorized, differentiable almost
everywhere, no compiled code.
"""

from __future__ import annotations

import torch

__all__ = ["bev_corners", "paired_iou_3d", "rotated_iou_bev", "rotated_nms"]

_EPS = 1e-6


def bev_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 7) boxes ``x, y, z, l, w, h, heading`` -> (N, 4, 2) BEV corners, counter-clockwise."""
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    d = torch.stack([c, s], -1) * (boxes[:, 3:4] / 2)
    n = torch.stack([-s, c], -1) * (boxes[:, 4:5] / 2)
    ctr = boxes[:, :2]
    return torch.stack([ctr + d + n, ctr - d + n, ctr - d - n, ctr + d - n], 1)


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """points (..., K, 2), boxes (..., 7) (same leading shape) -> (..., K) bool: point within the box
    (edges included)."""
    rel = points - boxes[..., None, :2]
    c, s = torch.cos(boxes[..., 6])[..., None], torch.sin(boxes[..., 6])[..., None]
    along = rel[..., 0] * c + rel[..., 1] * s
    across = -rel[..., 0] * s + rel[..., 1] * c
    tol = 1e-5
    return (along.abs() <= boxes[..., None, 3] / 2 + tol) & (across.abs() <= boxes[..., None, 4] / 2 + tol)


def _intersection_bev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """BEV intersection areas of boxes a (..., 7) and b (..., 7), broadcast to one leading shape."""
    a, b = torch.broadcast_tensors(a, b)
    shape = a.shape[:-1]
    ca, cb = bev_corners(a.reshape(-1, 7)), bev_corners(b.reshape(-1, 7))  # (P, 4, 2)
    a, b = a.reshape(-1, 7), b.reshape(-1, 7)
    a_in_b, b_in_a = _inside(ca, b), _inside(cb, a)
    # edge crossings: edge i of a (p -> p + r) and edge j of b (q -> q + t)
    p = ca[:, :, None, :]
    r = (ca.roll(-1, 1) - ca)[:, :, None, :]
    q = cb[:, None, :, :]
    t = (cb.roll(-1, 1) - cb)[:, None, :, :]
    cross = r[..., 0] * t[..., 1] - r[..., 1] * t[..., 0]  # (P, 4, 4)
    qp = q - p
    safe = torch.where(cross.abs() < _EPS, torch.ones_like(cross), cross)
    u_a = (qp[..., 0] * t[..., 1] - qp[..., 1] * t[..., 0]) / safe
    u_b = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / safe
    hit = (cross.abs() >= _EPS) & (u_a >= 0) & (u_a <= 1) & (u_b >= 0) & (u_b <= 1)
    crossing = (p + u_a[..., None] * r).reshape(-1, 16, 2)
    pts = torch.cat([ca, cb, crossing], 1)
    valid = torch.cat([a_in_b, b_in_a, hit.reshape(-1, 16)], 1)  # (P, 24)

    cnt = valid.sum(-1, keepdim=True).clamp(min=1)
    centroid = (pts * valid[..., None]).sum(1) / cnt
    rel = (pts - centroid[:, None]).detach()  # the vertex order only; the area keeps its gradient
    ang = torch.atan2(rel[..., 1], rel[..., 0])
    ang = torch.where(valid, ang, torch.full_like(ang, 10.0))
    order = ang.argsort(-1)
    pts = torch.gather(pts, 1, order[..., None].expand_as(pts))
    valid = torch.gather(valid, 1, order)
    first = pts[:, :1].expand_as(pts)
    pts = torch.where(valid[..., None], pts, first)  # invalid tail collapses onto the first vertex
    nxt = pts.roll(-1, 1)
    area = 0.5 * (pts[..., 0] * nxt[..., 1] - pts[..., 1] * nxt[..., 0]).sum(-1).abs()
    area = torch.where(valid.sum(-1) >= 3, area, torch.zeros_like(area))
    return area.reshape(shape)


def rotated_iou_bev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise BEV IoU: a (N, 7), b (M, 7) boxes (vehicle frame, metres, radians) -> (N, M) in [0, 1]."""
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        return a.new_zeros((n, m))
    inter = _intersection_bev(a[:, None], b[None])
    union = (a[:, 3] * a[:, 4])[:, None] + (b[:, 3] * b[:, 4])[None, :] - inter
    return (inter / union.clamp(min=_EPS)).clamp(0.0, 1.0)


def paired_iou_3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """3D IoU of box a[i] with box b[i] (both (N, 7), z the box centre): BEV intersection times the
    overlap in height over the union of the volumes -> (N,) in [0, 1]; differentiable almost
    everywhere (the IoU loss and the IoU-score targets use it)."""
    if a.shape[0] == 0:
        return a.new_zeros((0,))
    inter = _intersection_bev(a, b)
    top = torch.minimum(a[:, 2] + a[:, 5] / 2, b[:, 2] + b[:, 5] / 2)
    bottom = torch.maximum(a[:, 2] - a[:, 5] / 2, b[:, 2] - b[:, 5] / 2)
    inter = inter * (top - bottom).clamp(min=0)
    union = a[:, 3:6].prod(1) + b[:, 3:6].prod(1) - inter
    return (inter / union.clamp(min=_EPS)).clamp(0.0, 1.0)


def rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on BEV rotated IoU: (N, 7) boxes, (N,) scores -> kept indices (int64), best first."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = scores.argsort(descending=True)
    iou = rotated_iou_bev(boxes[order], boxes[order])
    n = order.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    over = (iou > iou_threshold).cpu()
    keep = []
    sup = suppressed.cpu()
    for i in range(n):
        if sup[i]:
            continue
        keep.append(i)
        sup |= over[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]
