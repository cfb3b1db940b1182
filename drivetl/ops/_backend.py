"""Lazy build and load of the compiled ops, and their fake-tensor and autograd registrations.

Nothing is compiled or loaded at import. The first call that needs a compiled backend builds it
with torch's cpp_extension (ninja) into ``$DRIVETL_OPS_BUILD_DIR`` (default
``~/.cache/drivetl/ops``), one folder per torch version and backend, and loads it into the process;
later processes reuse the build. ``drivetl build-ops`` does the same ahead of time.

The ops live in the ``drivetl_ops`` torch library namespace:

* ``drivetl_ops::voxel_index`` (CPU, CUDA): points -> voxels (see ``_torch_impl.voxel_index``).
* ``drivetl_ops::segment_reduce`` (CPU, CUDA): grouped sum/mean/max (``_torch_impl.segment_reduce``).
* ``drivetl_ops::index_reduce`` (CPU): the same reductions by a row -> segment index, without
  grouping (rows in input order are each segment's rows in the reference order).
* ``drivetl_ops::pad_voxels`` (CPU): the (M, K, C) zero-padded voxels of hard voxelization (not
  differentiable; `voxelize` uses indexing in torch when gradients are needed).

The CPU library defines the schemas; the CUDA library only adds CUDA kernels to them, so it is
always loaded after the CPU one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Literal

from drivetl.errors import BackendUnavailableError

Kind = Literal["cpu", "cuda"]

log = logging.getLogger("drivetl.ops")
CSRC = Path(__file__).resolve().parent / "csrc"
_lock = threading.RLock()
_state: dict[str, Path | BackendUnavailableError] = {}  # kind -> loaded build folder, or the failure
_logged: set[str] = set()


def log_once(key: str, level: int, msg: str, *args: object) -> None:
    """Log `msg` the first time `key` is seen in this process."""
    if key not in _logged:
        _logged.add(key)
        log.log(level, msg, *args)


def build_root() -> Path:
    """Folder of the compiled ops for this torch version."""
    import torch

    root = os.environ.get("DRIVETL_OPS_BUILD_DIR") or str(Path.home() / ".cache" / "drivetl" / "ops")
    return Path(root).expanduser() / f"torch-{torch.__version__}"


def load(kind: Kind) -> Path:
    """Build (if needed) and load the `kind` ops; return their build folder.

    Raises:
        BackendUnavailableError: the ops cannot be built or loaded here; the message carries the
            compiler's output. The failure is remembered for the process.
    """
    state = _state.get(kind)
    if isinstance(state, Path):  # loaded: the per-call path of every op, kept cheap
        return state
    with _lock:
        state = _state.get(kind)
        if isinstance(state, BackendUnavailableError):
            raise state
        if state is None:
            try:
                _build(kind)
            except BackendUnavailableError as exc:
                _state[kind] = exc
                raise
            state = _state[kind] = build_root() / kind
        return state


def available(kind: Kind) -> bool:
    """Whether the `kind` ops are (or can be) built and loaded here."""
    try:
        load(kind)
    except BackendUnavailableError:
        return False
    return True


def _build(kind: Kind) -> None:
    import torch
    from torch.utils import cpp_extension

    if kind == "cuda":
        if torch.version.cuda is None:
            raise BackendUnavailableError(
                f"drivetl CUDA ops need a CUDA build of torch; this torch ({torch.__version__}) has no "
                "CUDA. Install a CUDA torch wheel, or use backend='cpu' or 'torch'"
            )
        load("cpu")  # defines the op schemas the CUDA kernels attach to
        sources = [CSRC / "voxelize_cuda.cu", CSRC / "voxelize_cuda_binding.cpp"]
    elif kind == "cpu":
        sources = [CSRC / "voxelize_cpu.cpp"]  # includes voxel_index_cpu.h, radix_sort.h, segment_cpu.h
    else:
        raise ValueError(f"unknown ops kind {kind!r}; expected 'cpu' or 'cuda'")
    folder = build_root() / kind
    folder.mkdir(parents=True, exist_ok=True)
    log.info("drivetl ops: building/loading the %s kernels in %s (compiled once, then reused)", kind, folder)
    start = time.perf_counter()
    try:
        cpp_extension.load(
            name=f"drivetl_ops_{kind}",
            sources=[str(s) for s in sources],
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr"],
            extra_include_paths=[str(CSRC)],
            build_directory=str(folder),
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - compiler/loader errors come in many types
        raise BackendUnavailableError(
            f"drivetl {kind} ops could not be built in {folder}: {exc}\n"
            f"Fix the compiler error above (a C++17 compiler{' and nvcc' if kind == 'cuda' else ''} "
            "and ninja are needed), or choose backend='torch'"
        ) from exc
    log.info("drivetl ops: %s kernels ready (%.1f s)", kind, time.perf_counter() - start)
    if kind == "cpu":
        _register_python_side()


def _register_python_side() -> None:
    """Fake (shape) functions and autograd for the ops, registered once the schemas exist."""
    import torch

    @torch.library.register_fake("drivetl_ops::voxel_index")
    def _voxel_index_fake(points, offsets, voxel_size, range_min, range_max, grid_shape,
                          max_points_per_voxel, max_voxels, hashed, seed):
        ctx = torch.library.get_ctx()
        m, p = ctx.new_dynamic_size(), ctx.new_dynamic_size()
        n, b = points.shape[0], offsets.shape[0] - 1
        return (
            points.new_empty((m, 4), dtype=torch.int32),
            points.new_empty((m,), dtype=torch.int32),
            points.new_empty((n,), dtype=torch.int64),
            points.new_empty((b + 1,), dtype=torch.int64),
            points.new_empty((p,), dtype=torch.int64),
        )

    @torch.library.register_fake("drivetl_ops::voxel_index_reduce")
    def _voxel_index_reduce_fake(points, offsets, voxel_size, range_min, range_max, grid_shape,
                                 max_points_per_voxel, max_voxels, hashed, seed, reduce):
        coords, counts, p2v, voff, order = _voxel_index_fake(
            points, offsets, voxel_size, range_min, range_max, grid_shape, max_points_per_voxel, max_voxels,
            hashed, seed)
        return coords, counts, p2v, voff, order, points.new_empty((coords.shape[0], points.shape[1]))

    @torch.library.register_fake("drivetl_ops::segment_reduce")
    def _segment_reduce_fake(values, point_order, counts, reduce):
        m, c = counts.shape[0], values.shape[1]
        arg_shape = (m, c) if reduce == 2 else (0,)
        return values.new_empty((m, c)), values.new_empty(arg_shape, dtype=torch.int64)

    @torch.library.register_fake("drivetl_ops::index_reduce")
    def _index_reduce_fake(values, index, num_segments, reduce):
        m, c = num_segments, values.shape[1]
        arg_shape = (m, c) if reduce == 2 else (0,)
        return values.new_empty((m, c)), values.new_empty(arg_shape, dtype=torch.int64)

    def _index_setup(ctx, inputs, output):
        values, index, num_segments, reduce = inputs
        ctx.save_for_backward(index, output[1])
        ctx.num_rows, ctx.num_segments, ctx.reduce = values.shape[0], num_segments, reduce

    def _index_backward(ctx, grad_out, _grad_arg):
        index, arg = ctx.saved_tensors
        if ctx.reduce == 2:
            grad = grad_out.new_zeros((ctx.num_rows, grad_out.shape[1]))
            grad.scatter_add_(0, arg.clamp(min=0), torch.where(arg >= 0, grad_out, 0.0))
            return grad, None, None, None
        kept = index >= 0
        seg = index.clamp(min=0)
        g = grad_out[seg]
        if ctx.reduce == 1:
            counts = torch.bincount(index[kept], minlength=ctx.num_segments)
            g = g / counts[seg].to(g.dtype)[:, None]
        return torch.where(kept[:, None], g, 0.0), None, None, None

    torch.library.register_autograd("drivetl_ops::index_reduce", _index_backward, setup_context=_index_setup)

    @torch.library.register_fake("drivetl_ops::pad_voxels")
    def _pad_voxels_fake(points, point_order, counts, k):
        return points.new_empty((counts.shape[0], k, points.shape[1]))

    def _setup(ctx, inputs, output):
        values, point_order, counts, reduce = inputs
        ctx.save_for_backward(point_order, counts, output[1])
        ctx.num_rows, ctx.reduce = values.shape[0], reduce

    def _backward(ctx, grad_out, _grad_arg):
        point_order, counts, arg = ctx.saved_tensors
        grad = grad_out.new_zeros((ctx.num_rows, grad_out.shape[1]))
        if ctx.reduce == 2:
            # Each (row, channel) is the first maximum of at most one segment: no collisions
            # except the +0.0 of empty segments, sent to row 0.
            grad.scatter_add_(0, arg.clamp(min=0), torch.where(arg >= 0, grad_out, 0.0))
        else:
            counts64 = counts.to(torch.int64)
            seg = torch.repeat_interleave(
                torch.arange(counts64.shape[0], device=grad.device),
                counts64,
                output_size=point_order.shape[0],
            )
            g = grad_out[seg]
            if ctx.reduce == 1:
                g = g / counts64[seg].to(g.dtype)[:, None]
            grad = grad.index_put((point_order,), g)
        return grad, None, None, None

    torch.library.register_autograd("drivetl_ops::segment_reduce", _backward, setup_context=_setup)
