"""Plain-torch reference of the voxelization and segment-reduction ops: the specification.

Every compiled backend must return bit-identical tensors to these functions. They run on any
device torch supports and are written for clarity first; the definitions they fix are:

* Cell of a point: ``q = floor((p - min) / size)`` in float32. A point is kept in the grid when
  ``min <= p < max`` and ``q < grid_shape`` on every axis (see `VoxelGrid`).
* Linear cell index ``lin = (qz * ny + qy) * nx + qx``; voxel key ``batch * nx*ny*nz + lin``.
  Voxels are ordered by key: by frame, then z, then y, then x.
* ``max_voxels`` (per frame): the first ``max_voxels`` voxels of each frame in that order are kept.
* ``max_points_per_voxel`` = K: ``keep="first"`` keeps a voxel's first K points in input order;
  ``keep="hashed"`` keeps its K points with the lowest ``point_hash(frame-local index, seed)``
  (ties, impossible within a frame, go to the lower index). Kept points are listed in input order.
* Reductions run sequentially over a voxel's points in that order, accumulating in the values'
  dtype: sum starts at +0.0 and adds; mean is that sum divided by the count; max starts at the
  first value and replaces it only by a strictly greater one (the first maximum wins, which is
  also where the max gradient goes).
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
REDUCE_CODES = {"sum": 0, "mean": 1, "max": 2}


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32), without any int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finalizer (a bijection on [0, 2^32)), on int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def point_hash(local_index: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded 32-bit hash of frame-local point indices (int64 (P,) -> int64 (P,) in [0, 2^32))."""
    salt = _fmix32(torch.tensor((seed + 0x9E3779B9) & _M32, dtype=torch.int64))
    return _fmix32((local_index & _M32) ^ salt.to(local_index.device))


def voxel_index(
    points: torch.Tensor,
    offsets: torch.Tensor,
    voxel_size: tuple[float, float, float],
    range_min: tuple[float, float, float],
    range_max: tuple[float, float, float],
    grid_shape: tuple[int, int, int],
    max_points_per_voxel: int,
    max_voxels: int,
    hashed: bool,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assign points to voxels (the reference of ``drivetl_ops::voxel_index``).

    Args:
        points: (N, C) float32, columns x, y, z (metres) then features; NaN/inf already rejected.
        offsets: (B+1,) int64, frame b is ``points[offsets[b]:offsets[b+1]]``, offsets[0] == 0.
        max_points_per_voxel, max_voxels: caps; -1 means none.

    Returns:
        coords (M, 4) int32 (batch, z, y, x); counts (M,) int32 kept points per voxel;
        point_to_voxel (N,) int64 (-1: dropped); voxel_offsets (B+1,) int64;
        point_order (P,) int64: kept point indices grouped by voxel, input order within a voxel.
    """
    dev = points.device
    n = points.shape[0]
    b = offsets.numel() - 1
    nx, ny, nz = grid_shape
    v = nx * ny * nz
    xyz = points[:, :3].to(torch.float32)
    mn = torch.tensor(range_min, dtype=torch.float32, device=dev)
    mx = torch.tensor(range_max, dtype=torch.float32, device=dev)
    size = torch.tensor(voxel_size, dtype=torch.float32, device=dev)
    shape_f = torch.tensor([nx, ny, nz], dtype=torch.float32, device=dev)
    q = torch.floor((xyz - mn) / size)
    valid = ((xyz >= mn) & (xyz < mx) & (q < shape_f)).all(dim=1)
    qi = torch.where(valid[:, None], q, 0.0).to(torch.int64)
    lin = (qi[:, 2] * ny + qi[:, 1]) * nx + qi[:, 0]
    frame = torch.repeat_interleave(torch.arange(b, device=dev), offsets.diff(), output_size=n)
    key = frame * v + lin

    sel = torch.nonzero(valid).squeeze(1)
    skey, perm = torch.sort(key[sel], stable=True)
    sidx = sel[perm]
    ukey, inv, run = torch.unique_consecutive(skey, return_inverse=True, return_counts=True)
    u = ukey.numel()
    run_start = torch.cumsum(run, 0) - run
    pos = torch.arange(skey.numel(), device=dev) - run_start[inv]

    vframe = ukey // v
    frame_first = torch.searchsorted(ukey, torch.arange(b, device=dev) * v)
    vkeep = torch.ones(u, dtype=torch.bool, device=dev)
    if max_voxels >= 0:
        vkeep = (torch.arange(u, device=dev) - frame_first[vframe]) < max_voxels
    pkeep = torch.ones(skey.numel(), dtype=torch.bool, device=dev)
    if max_points_per_voxel >= 0:
        if hashed:
            h = point_hash(sidx - offsets[frame[sidx]], seed)
            by_hash = torch.argsort(h, stable=True)
            grouped = by_hash[torch.argsort(inv[by_hash], stable=True)]
            hrank = torch.empty_like(pos)
            hrank[grouped] = torch.arange(grouped.numel(), device=dev) - run_start[inv[grouped]]
            pkeep = hrank < max_points_per_voxel
        else:
            pkeep = pos < max_points_per_voxel
    keep = pkeep & vkeep[inv]

    new_id = torch.cumsum(vkeep.to(torch.int64), 0) - 1
    kept_vox = torch.nonzero(vkeep).squeeze(1)
    counts = torch.bincount(inv[keep], minlength=u)[kept_vox].to(torch.int32)
    point_order = sidx[keep]
    point_to_voxel = torch.full((n,), -1, dtype=torch.int64, device=dev)
    point_to_voxel[point_order] = new_id[inv[keep]]

    kkey = ukey[kept_vox]
    kframe = kkey // v
    klin = kkey % v
    coords = torch.stack([kframe, klin // (nx * ny), (klin // nx) % ny, klin % nx], dim=1).to(torch.int32)
    voxel_offsets = torch.zeros(b + 1, dtype=torch.int64, device=dev)
    voxel_offsets[1:] = torch.cumsum(torch.bincount(kframe, minlength=b), 0)
    return coords, counts, point_to_voxel, voxel_offsets, point_order


def segment_reduce(
    values: torch.Tensor, point_order: torch.Tensor, counts: torch.Tensor, reduce: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce grouped rows (the reference of ``drivetl_ops::segment_reduce``; differentiable).

    Args:
        values: (N, C) floating.
        point_order: (P,) int64 row indices, grouped by segment (segment s owns the next counts[s]).
        counts: (M,) integer rows per segment; may be 0 (the result row is then 0).
        reduce: 0 sum, 1 mean, 2 max (see the module docstring for the order and tie rules).

    Returns:
        out (M, C) in values' dtype; arg (M, C) int64 row of the first maximum (-1 for an empty
        segment) when reduce is max, else an empty (0,) int64 tensor.
    """
    dev = values.device
    m, c = counts.numel(), values.shape[1]
    counts64 = counts.to(torch.int64)
    p = point_order.numel()
    seg = torch.repeat_interleave(torch.arange(m, device=dev), counts64, output_size=p)
    starts = torch.cumsum(counts64, 0) - counts64
    rank = torch.arange(p, device=dev) - starts[seg]
    by_rank = torch.argsort(rank, stable=True)
    per_rank = torch.bincount(rank, minlength=0).tolist() if p else []
    vals = values[point_order]
    out = torch.zeros((m, c), dtype=values.dtype, device=dev)
    arg = torch.full((m, c) if reduce == 2 else (0,), -1, dtype=torch.int64, device=dev)
    lo = 0
    for r, width in enumerate(per_rank):
        rows = by_rank[lo : lo + width]
        lo += width
        s, x = seg[rows], vals[rows]
        if reduce == 2:
            src = point_order[rows][:, None].expand(-1, c)
            if r == 0:
                out.index_put_((s,), x)
                arg[s] = src
            else:
                cur = out[s]
                better = x > cur
                out.index_put_((s,), torch.where(better, x, cur))
                arg[s] = torch.where(better, src, arg[s])
        else:
            out.index_put_((s,), out[s] + x)
    if reduce == 1:
        out = out / counts64.clamp(min=1).to(values.dtype)[:, None]
    return out, arg
