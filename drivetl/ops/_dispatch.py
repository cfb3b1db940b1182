"""Backend choice and input checks shared by `voxelize` and `scatter_reduce`."""

from __future__ import annotations

import logging
from typing import Literal

import torch

from drivetl.errors import DataError
from drivetl.ops import _backend

Backend = Literal["auto", "cuda", "cpu", "torch"]


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map a requested backend to the one that runs: ``"cuda"``, ``"cpu"`` or ``"torch"``.

    ``"auto"`` takes the compiled kernel for the tensors' device when it can be built, else the
    torch reference (logged once). An explicit ``"cuda"``/``"cpu"`` that cannot be met raises
    `BackendUnavailableError` (or ValueError for tensors on another device).
    """
    match backend:
        case "torch":
            return "torch"
        case "cpu" | "cuda":
            if device.type != backend:
                raise ValueError(
                    f"backend={backend!r} needs {backend} tensors, got tensors on {device}; move them "
                    f"or use backend='auto'"
                )
            _backend.load(backend)
            return backend
        case "auto":
            kind = device.type if device.type in ("cpu", "cuda") else None
            if kind is not None and _backend.available(kind):  # type: ignore[arg-type]
                _backend.log_once(f"auto-{kind}", logging.INFO, "drivetl ops: using the %s kernels", kind)
                return kind
            _backend.log_once(
                f"auto-torch-{device.type}", logging.WARNING,
                "drivetl ops: no compiled kernels for %s tensors; using the (slower) torch reference",
                device.type,
            )
            return "torch"
        case _:
            raise ValueError(f"backend must be 'auto', 'cuda', 'cpu' or 'torch', got {backend!r}")


def check_batch(points: torch.Tensor, offsets: torch.Tensor) -> None:
    """Validate a ragged batch: points (N, C>=3) floating, offsets (B+1,) int64 from 0 to N.

    Raises:
        ValueError: malformed shapes, dtypes or offsets.
    """
    if points.dim() != 2 or points.shape[1] < 3 or not points.is_floating_point():
        raise ValueError(f"points must be floating (N, C>=3), got {tuple(points.shape)} {points.dtype}")
    if offsets.dim() != 1 or offsets.numel() < 1 or offsets.dtype != torch.int64:
        raise ValueError(f"offsets must be int64 (B+1,), got {tuple(offsets.shape)} {offsets.dtype}")
    if offsets.device != points.device:
        raise ValueError(f"offsets is on {offsets.device} but points on {points.device}")
    n = points.shape[0]
    # B+1 Python ints: on a GPU one small copy and one synchronization (three `.item()`-style reads
    # cost three), on the CPU cheaper than three tensor ops.
    values = offsets.tolist()
    first, last = values[0], values[-1]
    decreasing = any(b < a for a, b in zip(values, values[1:], strict=False))
    if first != 0 or last != n or decreasing:
        raise ValueError(
            f"offsets must be non-decreasing from 0 to N={n} (frame b is points[offsets[b]:offsets[b+1]]), "
            f"got first={first}, last={last}"
        )


def check_finite(points: torch.Tensor, offsets: torch.Tensor) -> None:
    """Raise DataError for the first point whose x, y or z is NaN or inf, naming its frame and row.

    The compiled kernels detect non-finite coordinates themselves (for free, while quantizing) and
    this full check then runs only to name the culprit.
    """
    finite = torch.isfinite(points[:, :3]).all(dim=1)
    if not bool(finite.all()):
        row = int(torch.nonzero(~finite)[0, 0].item())
        where = torch.tensor(row, device=offsets.device)
        frame = int(torch.searchsorted(offsets, where, right=True).item()) - 1
        bad = points[row, :3].tolist()
        raise DataError(
            f"voxelize: frame {frame} of the batch has a non-finite point at row "
            f"{row - offsets[frame].item()} "
            f"(row {row} of the concatenated points): xyz={bad}; drop or repair NaN/inf points first"
        )
