"""BEV rotated IoU and rotated NMS against closed-form cases and a raster estimate."""

from __future__ import annotations

import math

import numpy as np
import torch

from drivetl.models.heads import bev_corners, rotated_iou_bev, rotated_nms


def _box(x, y, l, w, yaw):
    return [x, y, 0.0, l, w, 1.0, yaw]


def test_closed_form_cases() -> None:
    boxes = torch.tensor(
        [
            _box(0, 0, 1, 1, 0),
            _box(0, 0, 1, 1, math.pi / 4),
            _box(0.5, 0, 1, 1, 0),
            _box(5, 5, 1, 1, 0),
            _box(0, 0, 4, 2, 0.3),
        ]
    )
    iou = rotated_iou_bev(boxes, boxes)
    assert torch.allclose(iou.diagonal(), torch.ones(5), atol=1e-5)
    assert abs(float(iou[0, 1]) - math.sqrt(2) / 2) < 1e-4  # octagon: 2(sqrt2 - 1) / (2 - 2(sqrt2 - 1))
    assert abs(float(iou[0, 2]) - 1 / 3) < 1e-5
    assert float(iou[0, 3]) == 0.0
    assert abs(float(iou[0, 4]) - 1 / 8) < 1e-5  # unit square inside a 4 x 2 box
    assert torch.allclose(iou, iou.T, atol=1e-5)


def _raster_iou(a, b, n=400):
    xs = np.linspace(-6, 6, n)
    gx, gy = np.meshgrid(xs, xs)

    def inside(box):
        x, y, _, l, w, _, yaw = box
        dx, dy = gx - x, gy - y
        along = dx * math.cos(yaw) + dy * math.sin(yaw)
        across = -dx * math.sin(yaw) + dy * math.cos(yaw)
        return (np.abs(along) <= l / 2) & (np.abs(across) <= w / 2)

    ia, ib = inside(a), inside(b)
    return (ia & ib).sum() / max((ia | ib).sum(), 1)


def test_random_pairs_match_raster_estimate() -> None:
    rng = np.random.default_rng(0)
    a = [
        _box(*rng.uniform(-1, 1, 2), *rng.uniform(0.5, 4, 2), rng.uniform(-math.pi, math.pi))
        for _ in range(12)
    ]
    b = [
        _box(*rng.uniform(-1, 1, 2), *rng.uniform(0.5, 4, 2), rng.uniform(-math.pi, math.pi))
        for _ in range(12)
    ]
    iou = rotated_iou_bev(torch.tensor(a), torch.tensor(b))
    for i in range(12):
        assert abs(float(iou[i, i]) - _raster_iou(a[i], b[i])) < 0.02


def test_corners_are_counter_clockwise_and_sized() -> None:
    c = bev_corners(torch.tensor([_box(1, 2, 4, 2, 0.7)]))[0]
    nxt = c.roll(-1, 0)
    area = 0.5 * float((c[:, 0] * nxt[:, 1] - c[:, 1] * nxt[:, 0]).sum())
    assert abs(area - 8.0) < 1e-5  # positive: counter-clockwise


def test_nms_keeps_best_of_overlapping_and_all_separate() -> None:
    boxes = torch.tensor(
        [_box(0, 0, 4, 2, 0), _box(0.2, 0, 4, 2, 0.05), _box(10, 0, 4, 2, 0), _box(0, 0.1, 4, 2, 0)]
    )
    scores = torch.tensor([0.5, 0.9, 0.8, 0.3])
    keep = rotated_nms(boxes, scores, 0.5)
    assert keep.tolist() == [1, 2]
    assert rotated_nms(boxes[:0], scores[:0], 0.5).numel() == 0


def test_paired_3d_iou_closed_forms_and_gradient() -> None:
    from drivetl.models.heads import paired_iou_3d

    car = torch.tensor([[1.0, 2.0, 0.9, 4.0, 2.0, 1.8, 0.3]])
    up = car.clone()
    up[0, 2] += 0.9  # half its height higher: overlap 0.9 of 1.8 m -> 1/3
    turned = car.clone()
    turned[0, 6] += math.pi  # the same box, front and back swapped
    far = car.clone()
    far[0, 0] += 10.0
    a = torch.cat([car, car, car, car])
    b = torch.cat([car, up, turned, far])
    iou = paired_iou_3d(a, b)
    assert torch.allclose(iou, torch.tensor([1.0, 1.0 / 3.0, 1.0, 0.0]), atol=1e-5)
    # BEV part equals the pairwise function's diagonal on random pairs
    g = torch.Generator().manual_seed(1)
    scale = torch.tensor([6.0, 6.0, 0.0, 4.0, 2.0, 0.0, 6.28])
    x = torch.rand(30, 7, generator=g) * scale + torch.tensor([0, 0, 0, 0.5, 0.5, 1.0, 0])
    y = torch.rand(30, 7, generator=g) * scale + torch.tensor([0, 0, 0, 0.5, 0.5, 1.0, 0])
    assert torch.allclose(paired_iou_3d(x, y), rotated_iou_bev(x, y).diagonal(), atol=1e-5)
    # differentiable: moving a shifted box along the gradient raises its IoU
    moved = car.clone()
    moved[0, :2] += torch.tensor([0.6, -0.4])
    moved.requires_grad_(True)
    paired_iou_3d(moved, car).sum().backward()
    assert torch.isfinite(moved.grad).all()
    step = moved.detach() + 0.05 * moved.grad
    assert float(paired_iou_3d(step, car)) > float(paired_iou_3d(moved.detach(), car))
