"""Bird's-eye-view IoU of rotated boxes and rotated-box NMS, in plain torch.

The intersection of two rectangles is a convex polygon whose vertices are among: the corners of
each rectangle inside the other, and the crossings of their edges (at most 4 + 4 + 16 candidates).
All candidates are computed at once for every pair, the valid ones are ordered by angle around
their centroid, and the shoelace formula gives the area. Fully vectorized, differentiable almost
everywhere, no compiled code.
"""

from __future__ import annotations

import torch

__all__ = ["bev_corners", "rotated_iou_bev", "rotated_nms"]

_EPS = 1e-6


def bev_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 7) boxes ``x, y, z, l, w, h, heading`` -> (N, 4, 2) BEV corners, counter-clockwise."""
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    d = torch.stack([c, s], -1) * (boxes[:, 3:4] / 2)
    n = torch.stack([-s, c], -1) * (boxes[:, 4:5] / 2)
    ctr = boxes[:, :2]
    return torch.stack([ctr + d + n, ctr - d + n, ctr - d - n, ctr + d - n], 1)


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """points (N, M, K, 2), boxes (M, 7) -> (N, M, K) bool: point within box m (edges included)."""
    rel = points - boxes[None, :, None, :2]
    c, s = torch.cos(boxes[:, 6])[None, :, None], torch.sin(boxes[:, 6])[None, :, None]
    along = rel[..., 0] * c + rel[..., 1] * s
    across = -rel[..., 0] * s + rel[..., 1] * c
    tol = 1e-5
    return (along.abs() <= boxes[None, :, None, 3] / 2 + tol) & (
        across.abs() <= boxes[None, :, None, 4] / 2 + tol
    )


def rotated_iou_bev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise BEV IoU: a (N, 7), b (M, 7) boxes (vehicle frame, metres, radians) -> (N, M) in [0, 1]."""
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        return a.new_zeros((n, m))
    ca, cb = bev_corners(a), bev_corners(b)  # (N,4,2), (M,4,2)
    a_in_b = _inside(ca[:, None].expand(n, m, 4, 2), b)
    b_in_a = _inside(cb[None].expand(n, m, 4, 2).transpose(0, 1), a).transpose(0, 1)
    # edge crossings: edge i of a (p -> p + r) and edge j of b (q -> q + t)
    p = ca[:, None, :, None, :]
    r = (ca.roll(-1, 1) - ca)[:, None, :, None, :]
    q = cb[None, :, None, :, :]
    t = (cb.roll(-1, 1) - cb)[None, :, None, :, :]
    cross = r[..., 0] * t[..., 1] - r[..., 1] * t[..., 0]  # (N, M, 4, 4)
    qp = q - p
    safe = torch.where(cross.abs() < _EPS, torch.ones_like(cross), cross)
    u_a = (qp[..., 0] * t[..., 1] - qp[..., 1] * t[..., 0]) / safe
    u_b = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / safe
    hit = (cross.abs() >= _EPS) & (u_a >= 0) & (u_a <= 1) & (u_b >= 0) & (u_b <= 1)
    crossing = (p + u_a[..., None] * r).reshape(n, m, 16, 2)
    pts = torch.cat([ca[:, None].expand(n, m, 4, 2), cb[None].expand(n, m, 4, 2), crossing], 2)
    valid = torch.cat([a_in_b, b_in_a, hit.reshape(n, m, 16)], 2)  # (N, M, 24)

    cnt = valid.sum(-1, keepdim=True).clamp(min=1)
    centroid = (pts * valid[..., None]).sum(2) / cnt
    rel = pts - centroid[:, :, None]
    ang = torch.atan2(rel[..., 1], rel[..., 0])
    ang = torch.where(valid, ang, torch.full_like(ang, 10.0))
    order = ang.argsort(-1)
    pts = torch.gather(pts, 2, order[..., None].expand_as(pts))
    valid = torch.gather(valid, 2, order)
    first = pts[:, :, :1].expand_as(pts)
    pts = torch.where(valid[..., None], pts, first)  # invalid tail collapses onto the first vertex
    nxt = pts.roll(-1, 2)
    area = 0.5 * (pts[..., 0] * nxt[..., 1] - pts[..., 1] * nxt[..., 0]).sum(-1).abs()
    area = torch.where(valid.sum(-1) >= 3, area, torch.zeros_like(area))
    area_a = (a[:, 3] * a[:, 4])[:, None]
    area_b = (b[:, 3] * b[:, 4])[None, :]
    return (area / (area_a + area_b - area).clamp(min=_EPS)).clamp(0.0, 1.0)


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
