"""The CPU kernel's fused reduction (voxel_index_reduce): same bits as the reference on every
channel layout, signed zeros, NaN features, caps, one frame or many; gradients take the unfused path."""

from __future__ import annotations

import pytest
import torch

from drivetl.ops import VoxelGrid, scatter_reduce, voxelize

GRID = VoxelGrid((0.5, 0.5, 0.5), (-3.0, -3.0, -1.0, 3.0, 3.0, 1.0))
FIELDS = ("coords", "counts", "point_to_voxel", "voxel_offsets", "point_order", "features")


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        a, b = a.contiguous().view(torch.int32), b.contiguous().view(torch.int32)
    return torch.equal(a, b)


def awkward_points(n: int, channels: int, seed: int) -> torch.Tensor:
    """Points on a coarse lattice (many per voxel) whose features hold -0.0, +0.0, NaN and ties."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.round((torch.rand(n, 3, generator=g) * 7 - 3.5) * 2) / 2 + 0.1
    feats = torch.randn(n, channels - 3, generator=g)
    pick = torch.rand(n, channels - 3, generator=g)
    feats[pick < 0.15] = -0.0
    feats[(pick >= 0.15) & (pick < 0.25)] = 0.0
    feats[(pick >= 0.25) & (pick < 0.30)] = float("nan")
    feats[(pick >= 0.30) & (pick < 0.40)] = 1.0  # ties for max
    return torch.cat([xyz, feats], dim=1) if channels > 3 else xyz


@pytest.mark.parametrize("channels", [3, 4, 6])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize(
    "caps",
    [dict(), dict(max_points_per_voxel=2), dict(max_points_per_voxel=3, keep="hashed", seed=5),
     dict(max_voxels=7)],
    ids=["nocap", "k2", "hashed3", "m7"],
)
@pytest.mark.parametrize("sizes", [[400], [150, 0, 250]], ids=["one-frame", "batch"])
def test_fused_reduction_matches_reference(cpu_ops, channels, reduce, caps, sizes):
    points = awkward_points(sum(sizes), channels, seed=channels)
    offsets = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
    ref = voxelize(points, offsets, GRID, backend="torch", reduce=reduce, **caps)
    got = voxelize(points, offsets, GRID, backend="cpu", reduce=reduce, **caps)
    for name in FIELDS:
        assert bits_equal(getattr(ref, name), getattr(got, name)), name


def test_fused_reduction_of_strided_points(cpu_ops):
    # Columns of a wider tensor: a row stride of 8 and a column stride of 2.
    wide = torch.cat([awkward_points(300, 4, seed=3), torch.zeros(300, 4)], dim=1)
    points = wide[:, ::2]
    assert points.stride() == (8, 2)
    offsets = torch.tensor([0, 300])
    for reduce in ("sum", "mean", "max"):
        ref = voxelize(points.contiguous(), offsets, GRID, backend="torch", reduce=reduce)
        got = voxelize(points, offsets, GRID, backend="cpu", reduce=reduce)
        assert bits_equal(ref.features, got.features), reduce


def test_fused_outputs_are_exactly_sized(cpu_ops):
    # The one-frame path reserves outputs for every valid point and trims them after the walk.
    points = awkward_points(500, 4, seed=9)
    out = voxelize(points, torch.tensor([0, 500]), GRID, backend="cpu", reduce="mean", max_points_per_voxel=2)
    m = out.coords.shape[0]
    assert out.counts.shape == (m,) and out.features.shape == (m, 4)
    assert out.voxel_offsets.tolist() == [0, m]
    assert out.point_order.shape == (int(out.counts.sum()),)
    assert int((out.point_to_voxel >= 0).sum()) == out.point_order.shape[0]
    assert m < 500  # many points share voxels, so the reserve was trimmed


def test_gradients_take_the_differentiable_path(cpu_ops):
    points = awkward_points(300, 4, seed=4).nan_to_num()
    offsets = torch.tensor([0, 300])
    leaf = points.clone().requires_grad_(True)
    with_grad = voxelize(leaf, offsets, GRID, backend="cpu", reduce="mean")
    fused = voxelize(points, offsets, GRID, backend="cpu", reduce="mean")
    assert with_grad.features.grad_fn is not None
    assert bits_equal(with_grad.features.detach(), fused.features)
    with_grad.features.sum().backward()
    expected = torch.zeros_like(points)
    kept = with_grad.point_to_voxel >= 0
    expected[kept] = 1.0 / with_grad.counts[with_grad.point_to_voxel[kept]].float()[:, None]
    assert torch.allclose(leaf.grad, expected)


def test_opcheck_voxel_index_reduce(cpu_ops):
    points = awkward_points(200, 4, seed=2).nan_to_num()
    offsets = torch.tensor([0, 80, 200])
    for k, cap, hashed, reduce in ((-1, -1, False, 1), (2, 9, True, 2), (3, -1, False, 0)):
        args = (points, offsets, GRID.voxel_size, GRID.range_min, GRID.range_max, GRID.grid_shape,
                k, cap, hashed, 3, reduce)
        torch.library.opcheck(torch.ops.drivetl_ops.voxel_index_reduce.default, args)


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal, except that NaNs only need to be NaN in both (a bfloat16 NaN computed on the
    CPU comes back in the canonical encoding; torch's vectorized path keeps the sign)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    nan = torch.isnan(a)
    if not torch.equal(nan, torch.isnan(b)):
        return False
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a[~nan].view(ints), b[~nan].view(ints))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_other_float_dtypes_reduce_like_the_reference(cpu_ops, dtype, reduce):
    # Not float32: keys from the points quantized in float32, the reduction (unfused) in the
    # points' own dtype, one rounding per addition, as the reference does.
    points = awkward_points(700, 4, seed=11).to(dtype)
    offsets = torch.tensor([0, 300, 700])
    ref = voxelize(points, offsets, GRID, backend="torch", reduce=reduce)
    got = voxelize(points, offsets, GRID, backend="cpu", reduce=reduce)
    assert got.features.dtype == dtype
    for name in FIELDS:
        assert same_values(getattr(ref, name), getattr(got, name)), name
    index = got.point_to_voxel
    m = int(index.max()) + 1
    ref_s = scatter_reduce(points, index, m, reduce, backend="torch")
    got_s = scatter_reduce(points, index, m, reduce, backend="cpu")
    assert same_values(ref_s, got_s)
