"""voxelize: every compiled backend equals the torch reference bit for bit; the reference's semantics."""

from __future__ import annotations

import itertools

import pytest
import torch

from drivetl.errors import DataError
from drivetl.ops import VoxelGrid, Voxels, voxelize
from drivetl.ops._synthetic import waymo_like_batch

GRID = VoxelGrid((0.5, 0.5, 0.25), (-8.0, -6.0, -2.0, 8.0, 6.0, 2.0))
FIELDS = ("coords", "counts", "point_to_voxel", "voxel_offsets", "point_order", "features", "voxels")
CONFIGS = [
    dict(reduce="mean"),
    dict(reduce="max"),
    dict(reduce="sum"),
    dict(reduce=None),
    dict(reduce="mean", max_points_per_voxel=3),
    dict(reduce=None, max_points_per_voxel=4, keep="hashed", seed=7),
    dict(reduce="max", max_points_per_voxel=2, keep="hashed", seed=1),
    dict(reduce="sum", max_voxels=40),
    dict(reduce=None, max_voxels=25, max_points_per_voxel=5),
    dict(reduce="mean", max_voxels=0),
]


@pytest.fixture(scope="module")
def backends(cpu_ops) -> list[str]:
    """Compiled backends to compare with the reference (the CPU kernels are built once per session)."""
    from drivetl.ops import build

    found = ["cpu"]
    if torch.cuda.is_available():
        build("cuda")
        found.append("cuda")
    return found


def assert_same(a: Voxels, b: Voxels) -> None:
    """Bitwise equality of every field (floats compared as raw bits)."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        x, y = x.cpu(), y.cpu()
        assert x.dtype == y.dtype and x.shape == y.shape, (name, x.dtype, y.dtype, x.shape, y.shape)
        if x.is_floating_point():
            x, y = x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8)
        assert torch.equal(x, y), f"{name} differs"





def check_all(
    points: torch.Tensor, offsets: torch.Tensor, grid: VoxelGrid, backends: list[str], **kw
) -> Voxels:
    ref = voxelize(points, offsets, grid, backend="torch", **kw)
    for backend in backends:
        dev = "cuda" if backend == "cuda" else "cpu"
        got = voxelize(points.to(dev), offsets.to(dev), grid, backend=backend, **kw)
        assert_same(ref, got)
    return ref


def random_batch(seed: int, sizes: list[int], spread: float = 1.2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    lo = torch.tensor(GRID.range_min) * spread
    hi = torch.tensor(GRID.range_max) * spread
    xyz = lo + (hi - lo) * torch.rand(n, 3, generator=g)
    # Snap a third of the points to a coarse lattice so voxels get many points and exact boundaries.
    snap = torch.rand(n, generator=g) < 0.3
    xyz[snap] = torch.round(xyz[snap] * 2) / 2
    feats = torch.randn(n, 2, generator=g)
    offsets = torch.tensor([0, *itertools.accumulate(sizes)], dtype=torch.int64)
    return torch.cat([xyz, feats], dim=1), offsets


@pytest.mark.parametrize(
    "seed_cfg", list(enumerate(CONFIGS)), ids=lambda c: "-".join(f"{k}={v}" for k, v in c[1].items())
)
def test_random_batches_match_reference(backends, seed_cfg):
    seed, cfg = seed_cfg
    points, offsets = random_batch(seed, [700, 0, 300, 900, 1])
    check_all(points, offsets, GRID, backends, **cfg)


def test_all_points_in_one_voxel(backends):
    g = torch.Generator().manual_seed(3)
    points = torch.cat([0.05 + 0.15 * torch.rand(600, 3, generator=g), torch.randn(600, 3, generator=g)], 1)
    offsets = torch.tensor([0, 350, 600])
    for cfg in (CONFIGS[0], CONFIGS[1], CONFIGS[3], CONFIGS[4], CONFIGS[5]):
        ref = check_all(points, offsets, GRID, backends, **cfg)
        assert ref.coords.tolist() == [[0, 8, 12, 16], [1, 8, 12, 16]]
        k = cfg.get("max_points_per_voxel")
        assert ref.counts.tolist() == ([k, k] if k else [350, 250])


def test_points_on_boundaries(backends):
    g = GRID
    xs = [-8.0, -7.5, -0.5, 0.0, 0.5, 7.5, 8.0, torch.nextafter(torch.tensor(8.0), torch.tensor(0.0)).item()]
    pts = torch.tensor([[x, 0.0, 0.0, 1.0] for x in xs], dtype=torch.float32)
    ref = check_all(pts, torch.tensor([0, len(xs)]), g, backends, reduce="sum")
    # min is inside (cell 0); max is outside; exact multiples start a new cell.
    cells = {int(ref.coords[v, 3]) for v in ref.point_to_voxel.tolist() if v >= 0}
    assert ref.point_to_voxel[6] == -1
    assert {0, 1, 15, 16, 17, 31} <= cells
    qx = ref.coords[ref.point_to_voxel[:6], 3].tolist()
    assert qx == [0, 1, 15, 16, 17, 31]
    # Every axis: a point at z = max or y below min is dropped.
    edge = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, -6.0001, 0.0, 1.0], [0.0, -6.0, -2.0, 1.0]])
    ref = check_all(edge, torch.tensor([0, 3]), g, backends)
    assert ref.point_to_voxel.tolist() == [-1, -1, 0]
    assert ref.coords.tolist() == [[0, 0, 0, 16]]


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_non_finite_points_rejected(backends, backend):
    for bad, column in ((float("nan"), 1), (float("inf"), 0), (float("-inf"), 2)):
        points, offsets = random_batch(0, [10, 0, 20, 5])
        points[17, column] = bad
        with pytest.raises(DataError, match=r"frame 2 .*row 7 .*row 17"):
            voxelize(points, offsets, GRID, backend=backend)
        points[17, column] = 0.0
        points[3, 3] = bad  # a non-finite feature column is data, not geometry: allowed
        voxelize(points, offsets, GRID, backend=backend, reduce=None)


def test_empty_inputs(backends):
    for sizes in ([0], [0, 0, 0], [5, 0]):
        points, offsets = random_batch(1, sizes)
        for cfg in CONFIGS[::2] + CONFIGS[5:6]:
            ref = check_all(points, offsets, GRID, backends, **cfg)
            assert ref.voxel_offsets.numel() == len(sizes) + 1
    ref = check_all(torch.zeros(0, 4), torch.zeros(1, dtype=torch.int64), GRID, backends)
    assert ref.coords.shape == (0, 4) and ref.features.shape == (0, 4)


def test_all_out_of_range(backends):
    points, offsets = random_batch(2, [100, 50])
    points[:, :3] += 100.0
    for cfg in CONFIGS:
        ref = check_all(points, offsets, GRID, backends, **cfg)
        assert ref.coords.shape == (0, 4)
        assert (ref.point_to_voxel == -1).all()
        assert ref.voxel_offsets.tolist() == [0, 0, 0]


WAYMO_VOXEL = VoxelGrid((0.1, 0.1, 0.15), (-75.0, -75.0, -2.0, 75.0, 75.0, 4.0))
WAYMO_PILLAR = VoxelGrid((0.32, 0.32, 6.0), (-74.88, -74.88, -2.0, 74.88, 74.88, 4.0))


def test_waymo_like_frames(backends):
    """Waymo's grids on a small Waymo-like batch (the full-size frames are in the slow tests)."""
    points, offsets = waymo_like_batch(2, n=6000, seed=5)
    hard = dict(reduce=None, max_points_per_voxel=32, max_voxels=1500, keep="hashed")
    cases = ((WAYMO_VOXEL, dict(reduce="mean")), (WAYMO_VOXEL, hard), (WAYMO_PILLAR, dict(reduce="max")))
    for grid, cfg in cases:
        ref = check_all(points, offsets, grid, backends, **cfg)
        assert ref.coords.shape[0] > 500
        if "max_voxels" not in cfg:
            assert (ref.point_to_voxel >= 0).float().mean() > 0.5


def test_reference_semantics_by_brute_force():
    """The reference agrees with a direct per-point loop (quantization, order, first-K, caps)."""
    points, offsets = random_batch(4, [300, 200])
    k, cap = 2, 30
    out = voxelize(
        points, offsets, GRID, backend="torch", max_points_per_voxel=k, max_voxels=cap, reduce="sum"
    )
    mn, size = torch.tensor(GRID.range_min), torch.tensor(GRID.voxel_size)
    nx, ny, nz = GRID.grid_shape
    expected: dict[tuple[int, int, int, int], list[int]] = {}
    for b in range(2):
        for i in range(int(offsets[b]), int(offsets[b + 1])):
            p = points[i, :3]
            q = torch.floor((p - mn) / size).long().tolist()
            inside = bool(((p >= mn) & (p < torch.tensor(GRID.range_max))).all())
            if inside and q[0] < nx and q[1] < ny and q[2] < nz:
                expected.setdefault((b, q[2], q[1], q[0]), []).append(i)
    keys = sorted(expected)
    kept = [key for b in range(2) for key in [x for x in keys if x[0] == b][:cap]]
    assert out.coords.tolist() == [list(key) for key in kept]
    assert out.counts.tolist() == [min(len(expected[key]), k) for key in kept]
    for v, key in enumerate(kept):
        rows = expected[key][:k]
        assert out.point_to_voxel[rows].tolist() == [v] * len(rows)
        assert torch.allclose(out.features[v], points[rows].sum(0), atol=1e-5)
    assert (out.point_to_voxel >= 0).sum() == sum(out.counts.tolist())


@pytest.mark.parametrize("frames", [1, 2])
def test_threads_match_reference(backends, frames):
    """One large frame (one thread whatever the setting) or a batch large enough for threads
    (2 threads: frames sorted and counted in parallel, then walked; 1 thread: frames in order
    into trimmed upper-bound outputs): both give the reference's bits, caps included."""
    points, offsets = waymo_like_batch(frames, n=36_000 // frames, seed=9)
    grid = VoxelGrid((0.2, 0.2, 0.2), (-40.0, -40.0, -2.0, 40.0, 40.0, 4.0))
    before = torch.get_num_threads()
    cfgs = (dict(reduce="mean"), dict(reduce=None, max_points_per_voxel=3, max_voxels=4000),
            dict(reduce=None, max_points_per_voxel=5, keep="hashed", max_voxels=5000))
    try:
        for cfg in cfgs:
            ref = voxelize(points, offsets, grid, backend="torch", **cfg)
            for threads in (2, 1):
                torch.set_num_threads(threads)
                assert_same(ref, voxelize(points, offsets, grid, backend="cpu", **cfg))
    finally:
        torch.set_num_threads(before)


def test_hashed_keep_is_seeded_unbiased_and_frame_local(backends):
    g = torch.Generator().manual_seed(0)
    points = torch.cat([0.05 + 0.15 * torch.rand(500, 3, generator=g), torch.arange(500.0)[:, None]], 1)
    offsets = torch.tensor([0, 500])
    first = voxelize(points, offsets, GRID, max_points_per_voxel=10, keep="first", backend="cpu")
    assert first.point_order.tolist() == list(range(10))
    a = voxelize(points, offsets, GRID, max_points_per_voxel=10, keep="hashed", seed=1, backend="cpu")
    b = voxelize(points, offsets, GRID, max_points_per_voxel=10, keep="hashed", seed=1, backend="cpu")
    c = voxelize(points, offsets, GRID, max_points_per_voxel=10, keep="hashed", seed=2, backend="cpu")
    assert_same(a, b)
    assert a.point_order.tolist() != first.point_order.tolist()
    assert a.point_order.tolist() != c.point_order.tolist()
    assert a.point_order.tolist() == sorted(a.point_order.tolist())  # listed in input order
    assert a.point_order.max() > 100  # picks from the whole voxel, not the front
    # Frame-local: the same frame after another frame keeps the same points.
    both = voxelize(torch.cat([points[:37], points]), torch.tensor([0, 37, 537]), GRID,
                    max_points_per_voxel=10, keep="hashed", seed=1, backend="cpu")
    second = both.point_order[both.coords[both.point_to_voxel[both.point_order], 0] == 1] - 37
    assert second.tolist() == a.point_order.tolist()


def test_padded_voxels_hold_points_in_input_order(backends):
    points, offsets = random_batch(6, [800])
    out = voxelize(points, offsets, GRID, reduce=None, max_points_per_voxel=3, backend="cpu")
    assert out.voxels.shape == (out.coords.shape[0], 3, points.shape[1])
    for v in range(0, out.coords.shape[0], 7):
        rows = torch.nonzero(out.point_to_voxel == v).squeeze(1)
        assert torch.equal(out.voxels[v, : len(rows)], points[rows])
        assert (out.voxels[v, len(rows) :] == 0).all()


def test_index_only(backends):
    points, offsets = random_batch(2, [500, 300])
    full = voxelize(points, offsets, GRID, reduce=None, backend="cpu")
    index = voxelize(points, offsets, GRID, reduce=None, padded=False, backend="cpu")
    assert index.voxels is None and index.features is None
    assert torch.equal(full.point_to_voxel, index.point_to_voxel) and torch.equal(full.coords, index.coords)
    assert full.voxels.shape == (full.coords.shape[0], int(full.counts.max()), points.shape[1])


def test_padded_voxels_are_built_lazily_and_keep_gradients(backends):
    points, offsets = random_batch(3, [400])
    out = voxelize(points, offsets, GRID, reduce=None, max_points_per_voxel=4, backend="cpu")
    assert "voxels" not in out.__dict__  # not built until read
    first = out.voxels
    assert out.voxels is first  # built once
    leaf = points.clone().requires_grad_(True)
    grad_out = voxelize(leaf, offsets, GRID, reduce=None, max_points_per_voxel=4, backend="cpu").voxels
    assert torch.equal(grad_out.detach(), first)
    grad_out.sum().backward()
    assert torch.equal(leaf.grad[:, 0], (out.point_to_voxel >= 0).to(leaf.dtype))


def test_bad_arguments():
    points, offsets = random_batch(0, [10])
    with pytest.raises(ValueError, match="offsets"):
        voxelize(points, torch.tensor([0, 5]), GRID)
    with pytest.raises(ValueError, match="offsets"):
        voxelize(points, torch.tensor([0, 7, 3, 10]), GRID)
    with pytest.raises(ValueError, match="backend"):
        voxelize(points, offsets, GRID, backend="gpu")
    with pytest.raises(ValueError, match="max_points_per_voxel"):
        voxelize(points, offsets, GRID, max_points_per_voxel=0)
    with pytest.raises(ValueError, match="keep"):
        voxelize(points, offsets, GRID, keep="random")


def test_voxel_grid_validation():
    from drivetl.errors import ConfigError

    assert VoxelGrid((0.1, 0.1, 0.15), (-75, -75, -2, 75, 75, 4)).grid_shape == (1500, 1500, 40)
    with pytest.raises(ConfigError, match="whole number"):
        VoxelGrid((0.3, 0.3, 0.3), (-1, -1, -1, 1, 1, 1))
    with pytest.raises(ConfigError, match="axis z"):
        VoxelGrid((0.5, 0.5, 0.5), (-1, -1, 1, 1, 1, 1))


def test_grid_with_more_than_2_to_32_cells(backends):
    """Keys wider than 32 bits take the kernels' 64-bit path; results still match bit for bit."""
    grid = VoxelGrid((0.01, 0.01, 0.01), (-50.0, -50.0, -5.0, 50.0, 50.0, 5.0))
    assert grid.num_cells > 2**32
    points, offsets = random_batch(8, [6000, 0, 1500])
    points[:, :3] *= 4.0
    points[::3, :3] = torch.round(points[::3, :3] * 10) / 10  # shared cells
    hard = dict(reduce=None, max_points_per_voxel=2, keep="hashed", max_voxels=900)
    for cfg in (dict(reduce="mean"), hard):
        ref = check_all(points, offsets, grid, backends, **cfg)
        assert ref.coords[:, 1:].max() > 2000


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("frames", [1, 3])
def test_outputs_own_storage_of_their_size(backends, threads, frames):
    """The CPU kernel sizes its work buffers by upper bounds (every point its own voxel); what it
    returns must not keep those bounds' storage (it would travel with every pickle, `torch.save`
    or DataLoader worker hand-over)."""
    points, offsets = waymo_like_batch(frames, n=36_000, seed=4)
    grid = VoxelGrid((0.4, 0.4, 0.5), (-40.0, -40.0, -2.0, 40.0, 40.0, 4.0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for cfg in (dict(reduce="mean"), dict(reduce=None, padded=False), dict(reduce="max", max_voxels=500),
                    dict(reduce="sum", max_points_per_voxel=1)):
            out = voxelize(points, offsets, grid, backend="cpu", **cfg)
            ref = voxelize(points, offsets, grid, backend="torch", **cfg)
            assert_same(ref, out)
            assert out.coords.shape[0] < points.shape[0] // 2  # the bound is far from the voxel count
            for name in ("coords", "counts", "features", "point_order"):
                t = getattr(out, name)
                if t is not None:
                    assert t.untyped_storage().nbytes() <= 1.25 * t.nbytes + 64, (name, cfg)
    finally:
        torch.set_num_threads(before)
