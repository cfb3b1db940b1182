"""Segment reductions over a point -> segment index, differentiable (pillar/voxel feature nets)."""

from __future__ import annotations

import torch

from drivetl.ops import _torch_impl
from drivetl.ops._dispatch import Backend, resolve_backend


def check_index(index: torch.Tensor, num_segments: int) -> None:
    """Raise ValueError unless `index` is int64 (N,) with values -1 or in [0, num_segments)."""
    if index.dim() != 1 or index.dtype != torch.int64:
        raise ValueError(f"index must be an int64 (N,) tensor, got {tuple(index.shape)} {index.dtype}")
    if index.numel():
        lo, hi = torch.aminmax(index)
        if int(lo) < -1 or int(hi) >= num_segments:
            raise ValueError(f"index values must be -1 (ignored) or in [0, {num_segments})")


def group_by_index(index: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows grouped by segment: (order (P,) int64, counts (num_segments,) int64).

    Rows with index -1 are left out; inside a segment rows keep ascending order.
    """
    check_index(index, num_segments)
    rows = torch.nonzero(index >= 0).squeeze(1)
    _, perm = torch.sort(index[rows], stable=True)
    counts = torch.bincount(index[rows], minlength=num_segments)
    return rows[perm], counts


def run_segment_reduce(
    values: torch.Tensor, order: torch.Tensor, counts: torch.Tensor, reduce: str, kind: str
) -> torch.Tensor:
    """Reduce grouped rows with the resolved backend `kind` ("cuda", "cpu" or "torch")."""
    code = _torch_impl.REDUCE_CODES[reduce]
    if kind == "torch":
        return _torch_impl.segment_reduce(values, order, counts, code)[0]
    return torch.ops.drivetl_ops.segment_reduce(values, order, counts, code)[0]


def scatter_reduce(
    values: torch.Tensor,
    index: torch.Tensor,
    num_segments: int,
    reduce: str = "mean",
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Reduce the rows of `values` that share a segment index, deterministically.

    Args:
        values: (N, C) floating, any units; gradients flow back to it.
        index: (N,) int64 segment of each row, -1 to ignore the row (e.g. ``point_to_voxel``).
        num_segments: M, the number of output rows.
        reduce: "sum", "mean" or "max". Rows are reduced in ascending row order, sequentially;
            an empty segment gives 0. The max gradient goes to the first row that attains it.
        backend: "auto", "cuda", "cpu" or "torch" (see `voxelize`).

    Returns:
        (M, C) tensor in values' dtype, bit-identical on every backend.
    """
    if reduce not in _torch_impl.REDUCE_CODES:
        raise ValueError(f"reduce must be 'sum', 'mean' or 'max', got {reduce!r}")
    if values.dim() != 2 or not values.is_floating_point() or values.shape[0] != index.shape[0]:
        raise ValueError(f"values must be floating (N, C) with N = len(index); got {tuple(values.shape)}")
    kind = resolve_backend(backend, values.device)
    if kind == "cpu":  # reduces in input order: no grouping needed (same bits)
        check_index(index, num_segments)
        code = _torch_impl.REDUCE_CODES[reduce]
        return torch.ops.drivetl_ops.index_reduce(values, index, num_segments, code)[0]
    order, counts = group_by_index(index, num_segments)
    return run_segment_reduce(values, order, counts, reduce, kind)
