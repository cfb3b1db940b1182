"""Voxelization kernels and segment reductions: one API, a torch reference, CPU and CUDA kernels.

Public API:

* `VoxelGrid` -- voxel size + half-open point range (vehicle frame, metres), with ``grid_shape``.
* `voxelize` -- a ragged batch of point clouds (points concatenated, ``offsets`` (B+1,) int64 from
  0 to N, Pointcept style) -> `Voxels` (coords ``(batch, z, y, x)`` int32, counts,
  point_to_voxel, voxel_offsets, and reduced features or padded voxels).
* `scatter_reduce` -- segment sum/mean/max over a row -> segment index, with autograd.
* `build` -- compile a backend ahead of time (``drivetl build-ops``).

Every backend ("torch" reference, "cpu" C++/OpenMP kernel, "cuda" kernel) returns bit-identical
results; ``backend="auto"`` picks the compiled kernel for the tensors' device when it can be built.
Compiled kernels are built lazily on first use, never at import.
"""

from __future__ import annotations

from pathlib import Path

from drivetl.ops._grid import VoxelGrid
from drivetl.ops._scatter import scatter_reduce
from drivetl.ops._voxelize import Voxels, voxelize


def build(kind: str) -> Path:
    """Build and load the "cpu" or "cuda" kernels now; return their build folder.

    Raises:
        BackendUnavailableError: they cannot be built here (the message has the compiler output).
    """
    from drivetl.ops import _backend

    if kind not in ("cpu", "cuda"):
        raise ValueError(f"kind must be 'cpu' or 'cuda', got {kind!r}")
    return _backend.load(kind)  # type: ignore[arg-type]


__all__ = ["VoxelGrid", "Voxels", "build", "scatter_reduce", "voxelize"]
