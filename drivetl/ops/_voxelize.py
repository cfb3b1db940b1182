"""`voxelize`: ragged batches of point clouds -> voxels, deterministic on every backend."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from drivetl.ops import _torch_impl
from drivetl.ops._dispatch import Backend, check_batch, check_finite, resolve_backend
from drivetl.ops._grid import VoxelGrid
from drivetl.ops._scatter import run_segment_reduce


@dataclass(frozen=True)
class Voxels:
    """The voxels of a batch (M voxels, N input points, P kept points, B frames).

    Attributes:
        coords: (M, 4) int32 ``(batch, z, y, x)`` cell indices, sorted by frame, then z, y, x.
        counts: (M,) int32 kept points per voxel (1 <= count <= max_points_per_voxel).
        point_to_voxel: (N,) int64 voxel of each input point; -1 for a dropped point (outside the
            grid, over a cap).
        voxel_offsets: (B+1,) int64; frame b's voxels are ``coords[voxel_offsets[b]:voxel_offsets[b+1]]``.
        point_order: (P,) int64 kept point indices grouped by voxel (voxel v owns the next counts[v]),
            input order within a voxel.
        features: (M, C) reduced point columns (dynamic voxelization), or None.
        voxels: (M, K, C) points of each voxel in input order, zero-padded (hard voxelization), or None.
            Built on first access (a property), from the points given to `voxelize`: callers that
            never read it (e.g. a pillar net that reduces with `scatter_reduce`) never pay for it.
    """

    coords: torch.Tensor
    counts: torch.Tensor
    point_to_voxel: torch.Tensor
    voxel_offsets: torch.Tensor
    point_order: torch.Tensor
    features: torch.Tensor | None = None
    _padder: Callable[[], torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def voxels(self) -> torch.Tensor | None:
        """(M, K, C) padded voxels (see the class docstring), computed once on first access."""
        return None if self._padder is None else self._padder()


def voxelize(
    points: torch.Tensor,
    offsets: torch.Tensor,
    grid: VoxelGrid,
    *,
    max_points_per_voxel: int | None = None,
    max_voxels: int | None = None,
    reduce: Literal["mean", "max", "sum"] | None = "mean",
    keep: Literal["first", "hashed"] = "first",
    seed: int = 0,
    padded: bool = True,
    backend: Backend = "auto",
) -> Voxels:
    """Voxelize a batch of ragged point clouds; bit-identical output on every backend.

    Args:
        points: (N, C) float32 (other float dtypes are quantized in float32 and reduced in their
            own dtype: float64 and, on the CPU, float16/bfloat16; a bfloat16 NaN may come back in
            another NaN encoding), columns x, y, z in metres in the grid's frame (the vehicle
            frame), then features (intensity, ...).
        offsets: (B+1,) int64 on the points' device, Pointcept style: offsets[0] == 0,
            offsets[B] == N, frame b is ``points[offsets[b]:offsets[b+1]]`` (frames may be empty).
        grid: voxel size and half-open point range; a point's cell is ``floor((p - min) / size)``
            in float32.
        max_points_per_voxel: K, cap on points per voxel (None: no cap). Points over the cap get
            point_to_voxel -1.
        max_voxels: cap on voxels per frame (None: no cap). Each frame keeps its first
            ``max_voxels`` voxels in the output order (by z, then y, then x: the lowest cells).
        reduce: "mean", "max" or "sum" to return ``features`` (M, C); None to return the padded
            ``voxels`` (M, K, C), with K = max_points_per_voxel, or the largest count if None.
        keep: which K points a full voxel keeps: "first" (lowest input index) or "hashed" (the K
            with the lowest seeded hash of their index within the frame: an unbiased subset that
            is still deterministic).
        seed: seed of ``keep="hashed"``.
        padded: with ``reduce=None``, whether ``voxels`` is available; False returns the voxel
            index only (coords, counts, point_to_voxel, point_order), e.g. for a pillar feature net
            that reduces with `scatter_reduce` itself. The padded tensor is built lazily, on the
            first read of ``voxels`` (do not modify `points` in place before that). Without a cap,
            K is the largest count, so it can be large.
        backend: "auto" (compiled kernel for the device when it builds, else torch), "cuda",
            "cpu" (compiled kernels; raise BackendUnavailableError when they cannot be built) or
            "torch" (the reference).

    Raises:
        DataError: a non-finite x, y or z (names the frame and row).
        ValueError: malformed arguments.
    """
    check_batch(points, offsets)
    if max_points_per_voxel is not None and max_points_per_voxel < 1:
        raise ValueError(f"max_points_per_voxel must be >= 1 or None, got {max_points_per_voxel}")
    if max_voxels is not None and max_voxels < 0:
        raise ValueError(f"max_voxels must be >= 0 or None, got {max_voxels}")
    if reduce is not None and reduce not in _torch_impl.REDUCE_CODES:
        raise ValueError(f"reduce must be 'mean', 'max', 'sum' or None, got {reduce!r}")
    if keep not in ("first", "hashed"):
        raise ValueError(f"keep must be 'first' or 'hashed', got {keep!r}")
    kind = resolve_backend(backend, points.device)
    qpoints = points if points.dtype == torch.float32 else points[:, :3].to(torch.float32)
    args = (
        qpoints, offsets, grid.voxel_size, grid.range_min, grid.range_max, grid.grid_shape,
        -1 if max_points_per_voxel is None else int(max_points_per_voxel),
        -1 if max_voxels is None else int(max_voxels),
        keep == "hashed", int(seed),
    )
    # The CPU kernel reduces float32 points in the walk that builds the index (same bits, one
    # gather of the rows fewer); with gradients the reduction goes through the autograd op.
    fused = (kind == "cpu" and reduce is not None and points.dtype == torch.float32
             and not (points.requires_grad and torch.is_grad_enabled()))
    if kind == "torch":
        check_finite(points, offsets)
        coords, counts, p2v, voff, order = _torch_impl.voxel_index(*args)
    else:
        try:
            if fused:
                code = _torch_impl.REDUCE_CODES[reduce]
                out = torch.ops.drivetl_ops.voxel_index_reduce(*args, code)
                return Voxels(*out[:5], features=out[5])
            coords, counts, p2v, voff, order = torch.ops.drivetl_ops.voxel_index(*args)
        except RuntimeError as exc:
            if "non-finite" in str(exc):
                check_finite(points, offsets)  # raises DataError naming the frame and row
            raise
    if reduce is not None:
        features = run_segment_reduce(points, order, counts, reduce, kind)
        return Voxels(coords, counts, p2v, voff, order, features=features)
    if not padded:
        return Voxels(coords, counts, p2v, voff, order)
    padder = functools.partial(_pad, points, order, counts, max_points_per_voxel, kind)
    return Voxels(coords, counts, p2v, voff, order, _padder=padder)


def _pad(
    points: torch.Tensor, order: torch.Tensor, counts: torch.Tensor, k: int | None, kind: str
) -> torch.Tensor:
    """(M, K, C) zero-padded voxels; exact copies of the points (no arithmetic)."""
    m, c = counts.numel(), points.shape[1]
    if k is None:
        k = int(counts.max()) if m else 0
    if kind == "cpu" and not (points.requires_grad and torch.is_grad_enabled()):
        return torch.ops.drivetl_ops.pad_voxels(points, order, counts, k)
    counts64 = counts.to(torch.int64)
    seg = torch.repeat_interleave(torch.arange(m, device=points.device), counts64, output_size=order.numel())
    slot = torch.arange(order.numel(), device=points.device) - (torch.cumsum(counts64, 0) - counts64)[seg]
    out = points.new_zeros((m, k, c))
    out[seg, slot] = points[order]
    return out
