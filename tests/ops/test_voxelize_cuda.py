"""CUDA: the kernel source compiles with nvcc alone; on a GPU, bitwise parity with the reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from drivetl.ops import VoxelGrid, scatter_reduce, voxelize
from drivetl.ops._synthetic import waymo_like_batch

CU = Path(__file__).resolve().parents[2] / "drivetl" / "ops" / "csrc" / "voxelize_cuda.cu"
FIELDS = ("coords", "counts", "point_to_voxel", "voxel_offsets", "point_order", "features", "voxels")
GRIDS = [
    VoxelGrid((0.1, 0.1, 0.15), (-75.0, -75.0, -2.0, 75.0, 75.0, 4.0)),
    VoxelGrid((0.32, 0.32, 6.0), (-74.88, -74.88, -2.0, 74.88, 74.88, 4.0)),
]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cuda_kernel_source_compiles_without_torch(nvcc_compile):
    """`nvcc -c` on the kernel file alone (no torch include paths), one architecture.

    The compile was started in the background by the `nvcc_compile` fixture (tests/ops/conftest.py)
    and overlaps the other tests; this waits for it.
    """
    assert nvcc_compile is not None
    output, _ = nvcc_compile.communicate(timeout=600)
    assert nvcc_compile.returncode == 0, output
    includes = [line for line in CU.read_text().splitlines() if line.startswith("#include")]
    assert includes and not any(x in line for line in includes for x in ("torch", "ATen", "c10"))


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = a.cpu(), b.cpu()
    if a.is_floating_point():
        a, b = a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("grid", GRIDS, ids=["voxel0.1", "pillar0.32"])
@pytest.mark.parametrize(
    "cfg",
    [dict(reduce="mean"), dict(reduce="max"), dict(reduce=None, max_points_per_voxel=32, max_voxels=20000),
     dict(reduce="sum", max_points_per_voxel=5, keep="hashed", seed=3)],
    ids=str,
)
def test_cuda_matches_reference_on_waymo_like_batch(grid, cfg):
    points, offsets = waymo_like_batch(3, n=60_000, seed=11)
    ref = voxelize(points, offsets, grid, backend="torch", **cfg)
    got = voxelize(points.cuda(), offsets.cuda(), grid, backend="cuda", **cfg)
    again = voxelize(points.cuda(), offsets.cuda(), grid, backend="cuda", **cfg)
    for name in FIELDS:
        assert _same(getattr(ref, name), getattr(got, name)), name
        assert _same(getattr(got, name), getattr(again, name)), name


@pytest.mark.gpu
def test_cuda_adversarial_inputs():
    grid = VoxelGrid((0.5, 0.5, 0.5), (-4.0, -4.0, -2.0, 4.0, 4.0, 2.0))
    cases = [
        (torch.cat([0.1 + 0.2 * torch.rand(5000, 3), torch.randn(5000, 1)], 1), [0, 3000, 3000, 5000]),
        (torch.rand(100, 4) + 10.0, [0, 60, 100]),
        (torch.zeros(0, 4), [0, 0]),
        (torch.tensor([[-4.0, -4.0, -2.0, 1.0], [4.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]), [0, 3]),
    ]
    for points, offs in cases:
        offsets = torch.tensor(offs)
        for cfg in (dict(), dict(reduce=None, max_points_per_voxel=3, keep="hashed"), dict(max_voxels=1)):
            ref = voxelize(points, offsets, grid, backend="torch", **cfg)
            got = voxelize(points.cuda(), offsets.cuda(), grid, backend="cuda", **cfg)
            for name in FIELDS:
                assert _same(getattr(ref, name), getattr(got, name)), (name, offs, cfg)


@pytest.mark.gpu
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_cuda_scatter_reduce_values_and_gradients(reduce):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(5000, 4, generator=g, dtype=torch.float64)
    index = torch.randint(-1, 700, (5000,), generator=g)
    grads = []
    outs = []
    for dev, backend in (("cpu", "torch"), ("cuda", "cuda")):
        v = values.to(dev, copy=True).requires_grad_(True)  # a leaf of its own on each device
        out = scatter_reduce(v, index.to(dev), 800, reduce, backend=backend)
        out.sum().backward()
        outs.append(out.detach().cpu())
        grads.append(v.grad.cpu())
    assert _same(outs[0], outs[1]) and _same(grads[0], grads[1])


@pytest.mark.gpu
def test_cuda_opcheck():
    from drivetl.ops import build
    from drivetl.ops._scatter import group_by_index

    build("cuda")
    grid = VoxelGrid((0.5, 0.5, 0.5), (-4.0, -4.0, -2.0, 4.0, 4.0, 2.0))
    points = (torch.rand(300, 4) * 10 - 5).cuda()
    offsets = torch.tensor([0, 100, 300]).cuda()
    args = (points, offsets, grid.voxel_size, grid.range_min, grid.range_max, grid.grid_shape, 3, 50, True, 1)
    torch.library.opcheck(torch.ops.drivetl_ops.voxel_index.default, args)
    order, counts = group_by_index(torch.randint(-1, 20, (300,)).cuda(), 20)
    values = torch.randn(300, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    for reduce in (0, 1, 2):
        torch.library.opcheck(torch.ops.drivetl_ops.segment_reduce.default, (values, order, counts, reduce))
