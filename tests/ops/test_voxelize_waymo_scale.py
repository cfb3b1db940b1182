"""Slow: full-size Waymo-like frames and batches, every configuration, bit for bit vs the reference."""

from __future__ import annotations

import pytest
import torch

from drivetl.ops import VoxelGrid, Voxels, voxelize
from drivetl.ops._synthetic import waymo_like_batch

pytestmark = pytest.mark.slow

FIELDS = ("coords", "counts", "point_to_voxel", "voxel_offsets", "point_order", "features", "voxels")
GRIDS = {
    "voxel0.1": VoxelGrid((0.1, 0.1, 0.15), (-75.0, -75.0, -2.0, 75.0, 75.0, 4.0)),
    "pillar0.32": VoxelGrid((0.32, 0.32, 6.0), (-74.88, -74.88, -2.0, 74.88, 74.88, 4.0)),
}
CONFIGS = [
    dict(reduce="mean"),
    dict(reduce="max"),
    dict(reduce="sum", max_points_per_voxel=5, keep="hashed", seed=3),
    dict(reduce=None, max_points_per_voxel=32, max_voxels=20_000),
    dict(reduce=None, max_points_per_voxel=32, max_voxels=20_000, keep="hashed"),
]


def assert_same(a: Voxels, b: Voxels) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        if x.is_floating_point():
            x, y = x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8)
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), name


@pytest.fixture(scope="module")
def batches(cpu_ops) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"1x180k": waymo_like_batch(1, seed=0), "3x60k": waymo_like_batch(3, n=60_000, seed=11)}


@pytest.mark.parametrize("batch", ["1x180k", "3x60k"])
@pytest.mark.parametrize("grid", list(GRIDS), ids=str)
def test_waymo_scale_matches_reference(batches, batch, grid):
    points, offsets = batches[batch]
    before = torch.get_num_threads()
    try:
        for cfg in CONFIGS:
            ref = voxelize(points, offsets, GRIDS[grid], backend="torch", **cfg)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                assert_same(ref, voxelize(points, offsets, GRIDS[grid], backend="cpu", **cfg))
    finally:
        torch.set_num_threads(before)



@pytest.mark.gpu
@pytest.mark.parametrize("batch", ["1x180k", "3x60k"])
@pytest.mark.parametrize("grid", list(GRIDS), ids=str)
def test_waymo_scale_cuda_matches_reference(batches, batch, grid):
    """The CUDA kernel on full-size frames: every configuration bit for bit vs the reference, twice."""
    points, offsets = batches[batch]
    for cfg in CONFIGS:
        ref = voxelize(points, offsets, GRIDS[grid], backend="torch", **cfg)
        for _ in range(2):  # the second call runs on the allocator's reused blocks
            got = voxelize(points.cuda(), offsets.cuda(), GRIDS[grid], backend="cuda", **cfg)
            for name in FIELDS:
                x, y = getattr(ref, name), getattr(got, name)
                if x is None or y is None:
                    assert x is None and y is None, (cfg, name)
                    continue
                assert y.is_cuda, (cfg, name)
                y = y.cpu()
                if x.is_floating_point():
                    x, y = x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8)
                assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), (cfg, name)
