"""scatter_reduce / segment_reduce: bitwise parity across backends, gradients, opcheck."""

from __future__ import annotations

import pytest
import torch

from drivetl.ops import scatter_reduce
from drivetl.ops._scatter import group_by_index


def make(seed: int, n: int = 400, m: int = 60, c: int = 3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, c, generator=g, dtype=dtype)
    values[::7] = torch.round(values[::7])  # ties for max, signed zeros
    values[5, 0] = -0.0
    index = torch.randint(-1, m - 5, (n,), generator=g)  # -1 ignored; the last 5 segments stay empty
    return values, index, m


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.filterwarnings("ignore:index_reduce")
def test_backends_bitwise_equal(cpu_ops, reduce):
    values, index, m = make(len(reduce))
    ref = scatter_reduce(values, index, m, reduce, backend="torch")
    got = scatter_reduce(values, index, m, reduce, backend="cpu")
    assert torch.equal(ref.view(torch.int32), got.view(torch.int32))
    assert (ref[-5:] == 0).all()
    # Same values as torch's own scatter_reduce (which does not fix the order).
    builtin_reduce = {"sum": "sum", "mean": "mean", "max": "amax"}[reduce]
    keep = index >= 0
    builtin = torch.zeros(m, values.shape[1]).index_reduce_(
        0, index[keep], values[keep], builtin_reduce, include_self=False
    ) if reduce != "sum" else torch.zeros(m, values.shape[1]).index_add_(0, index[keep], values[keep])
    assert torch.allclose(ref, builtin, atol=1e-5)


def test_sum_is_sequential_in_row_order(cpu_ops):
    values = torch.tensor([[1e8], [1.0], [-1e8], [1.0]], dtype=torch.float32)
    index = torch.zeros(4, dtype=torch.int64)
    for backend in ("torch", "cpu"):
        # ((1e8 + 1) - 1e8) + 1 in float32 = 0 + 1 = 1 (a pairwise order would give 2 or 0).
        assert scatter_reduce(values, index, 1, "sum", backend=backend).item() == 1.0


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_gradients_match_reference(cpu_ops, reduce):
    values, index, m = make(2, dtype=torch.float64)
    grads = []
    for backend in ("torch", "cpu"):
        v = values.clone().requires_grad_(True)
        w = torch.randn(m, values.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        (scatter_reduce(v, index, m, reduce, backend=backend) * w).sum().backward()
        grads.append(v.grad)
    assert torch.equal(grads[0], grads[1])
    assert (grads[0][index < 0] == 0).all()


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_gradcheck(cpu_ops, backend):
    g = torch.Generator().manual_seed(4)
    values = torch.randn(12, 2, generator=g, dtype=torch.float64, requires_grad=True)  # no ties
    index = torch.randint(-1, 5, (12,), generator=g)
    for reduce in ("sum", "mean", "max"):
        fn = lambda v, r=reduce: scatter_reduce(v, index, 6, r, backend=backend)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (values,))


def test_max_gradient_goes_to_first_maximum(cpu_ops):
    for backend in ("torch", "cpu"):
        v = torch.tensor([[1.0], [3.0], [3.0], [2.0]], requires_grad=True)
        scatter_reduce(v, torch.zeros(4, dtype=torch.int64), 1, "max", backend=backend).sum().backward()
        assert v.grad.squeeze(1).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_opcheck_segment_and_index_reduce(cpu_ops):
    values, index, m = make(0, n=50, m=12)
    order, counts = group_by_index(index, m)
    for reduce in (0, 1, 2):
        leaf = values.double().requires_grad_(True)
        torch.library.opcheck(torch.ops.drivetl_ops.segment_reduce.default, (leaf, order, counts, reduce))
        torch.library.opcheck(torch.ops.drivetl_ops.index_reduce.default, (leaf, index, m, reduce))


def test_segment_and_index_reduce_agree(cpu_ops):
    """The grouped (gather) kernel and the input-order (scatter) kernel give the same bits."""
    values, index, m = make(5, n=3000, m=400, c=4)
    order, counts = group_by_index(index, m)
    for reduce in (0, 1, 2):
        a = torch.ops.drivetl_ops.segment_reduce(values, order, counts, reduce)
        b = torch.ops.drivetl_ops.index_reduce(values, index, m, reduce)
        assert torch.equal(a[0].view(torch.int32), b[0].view(torch.int32)) and torch.equal(a[1], b[1])


def test_bad_index():
    values = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="index"):
        scatter_reduce(values, torch.tensor([0, 5, 1]), 3, backend="torch")
    with pytest.raises(ValueError, match="reduce"):
        scatter_reduce(values, torch.tensor([0, 1, 1]), 3, "min", backend="torch")
