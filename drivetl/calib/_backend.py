"""The few array operations the camera model needs, for numpy arrays and torch tensors alike.

numpy inputs are computed in float64 (point clouds often arrive as float32; projecting them in
float64 costs little and keeps sub-micropixel accuracy). torch inputs keep their dtype and device,
so the same camera model runs inside a model on the GPU. torch is imported only when a tensor is seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "new_tensor")


def as_float(x: Any) -> Any:
    """numpy -> float64 array; torch floating tensors unchanged (integer tensors -> float32)."""
    if is_torch(x):
        return x if x.is_floating_point() else x.float()
    return np.asarray(x, dtype=np.float64)


def stack(items: list[Any], axis: int = -1) -> Any:
    if is_torch(items[0]):
        import torch

        return torch.stack(items, dim=axis)
    return np.stack(items, axis=axis)


def where(cond: Any, a: Any, b: Any) -> Any:
    if is_torch(cond):
        import torch

        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def ones_like(x: Any) -> Any:
    if is_torch(x):
        import torch

        return torch.ones_like(x)
    return np.ones_like(x)


def full_like(x: Any, value: float) -> Any:
    if is_torch(x):
        import torch

        return torch.full_like(x, value)
    return np.full_like(x, value)


def abs(x: Any) -> Any:  # noqa: A001 - mirrors the numpy/torch name
    return x.abs() if is_torch(x) else np.abs(x)


def tolerance(x: Any) -> float:
    """Residual below which an iterative solve in x's dtype counts as converged (1e-9 for float64)."""
    if is_torch(x):
        import torch

        eps = torch.finfo(x.dtype).eps
    else:
        eps = np.finfo(x.dtype).eps
    return max(1e-9, 100.0 * float(eps))


def max_abs(x: Any) -> float:
    if is_torch(x):
        return float(x.abs().max()) if x.numel() else 0.0
    return float(np.max(np.abs(x))) if x.size else 0.0


def transform(dst_from_src: np.ndarray, points: Any) -> Any:
    """(N, C>=3) points -> (N, 3) x, y, z in dst (numpy: float64; torch: the tensor's dtype and device).

    Extra columns (intensity, ...) are ignored.
    """
    pts = as_float(points)
    if pts.ndim != 2 or pts.shape[-1] < 3:
        raise ValueError(f"points must be (N, 3), got {tuple(pts.shape)}")
    pts = pts[:, :3]
    m = np.array(dst_from_src, dtype=np.float64)  # a writable copy: torch warns on read-only arrays
    if is_torch(pts):
        import torch

        rot = torch.as_tensor(m[:3, :3], dtype=pts.dtype, device=pts.device)
        trans = torch.as_tensor(m[:3, 3], dtype=pts.dtype, device=pts.device)
        return pts @ rot.T + trans
    return pts @ m[:3, :3].T + m[:3, 3]
