"""Backend resolution, lazy build, clear build errors, opcheck of voxel_index, `drivetl build-ops`."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drivetl.errors import BackendUnavailableError
from drivetl.ops import VoxelGrid, _backend, voxelize

GRID = VoxelGrid((0.5, 0.5, 0.5), (-4.0, -4.0, -2.0, 4.0, 4.0, 2.0))


def sample(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    points = torch.cat([torch.rand(n, 3, generator=g) * 10 - 5, torch.rand(n, 1, generator=g)], 1)
    return points, torch.tensor([0, n // 3, n // 3, n])


def test_import_does_not_build_or_load():
    code = (
        "import torch, drivetl.ops, drivetl.ops._backend as b\n"
        "try:\n    torch.ops.drivetl_ops.voxel_index\n    print('loaded')\n"
        "except (AttributeError, RuntimeError):\n    print('lazy', b._state)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy {}"


def test_opcheck_voxel_index(cpu_ops):
    points, offsets = sample()
    for k, cap, hashed in ((-1, -1, False), (2, 20, True)):
        args = (points, offsets, GRID.voxel_size, GRID.range_min, GRID.range_max, GRID.grid_shape,
                k, cap, hashed, 3)
        torch.library.opcheck(torch.ops.drivetl_ops.voxel_index.default, args)
    out = voxelize(points, offsets, GRID, reduce=None, max_points_per_voxel=3, backend="cpu")
    torch.library.opcheck(torch.ops.drivetl_ops.pad_voxels.default, (points, out.point_order, out.counts, 3))


def test_auto_uses_cpu_kernel(cpu_ops, caplog, monkeypatch):
    # Every backend gives the same bits, so the output alone cannot tell which one ran: check the
    # resolved backend, its log line, and that the torch reference is never called.
    from drivetl.ops import _dispatch, _torch_impl

    assert _dispatch.resolve_backend("auto", torch.device("cpu")) == "cpu"

    def reference_called(*args, **kwargs):
        raise AssertionError("backend='auto' ran the torch reference on CPU tensors")

    monkeypatch.setattr(_torch_impl, "voxel_index", reference_called)
    monkeypatch.setattr(_torch_impl, "segment_reduce", reference_called)
    monkeypatch.setattr(_backend, "_logged", set())
    points, offsets = sample()
    with caplog.at_level(logging.INFO, logger="drivetl.ops"):
        a = voxelize(points, offsets, GRID)
        c = voxelize(points, offsets, GRID, reduce="max", max_points_per_voxel=2)
        voxelize(points.double(), offsets, GRID)
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("drivetl ops: using the cpu kernels") == 1
    assert not any("torch reference" in m for m in messages)
    b = voxelize(points, offsets, GRID, backend="cpu")
    assert torch.equal(a.features, b.features)
    assert torch.equal(c.features, voxelize(points, offsets, GRID, reduce="max", max_points_per_voxel=2,
                                            backend="cpu").features)


def test_unbuildable_cpu_backend_raises_with_compiler_message(cpu_ops, tmp_path, monkeypatch, caplog):
    broken = tmp_path / "csrc"
    broken.mkdir()
    (broken / "voxelize_cpu.cpp").write_text("this is not C++;\n")
    monkeypatch.setenv("DRIVETL_OPS_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setattr(_backend, "CSRC", broken)
    monkeypatch.setattr(_backend, "_state", {})
    monkeypatch.setattr(_backend, "_logged", set())
    points, offsets = sample()
    expected = r"(?s)could not be built.*this is not C\+\+.*backend='torch'"
    with pytest.raises(BackendUnavailableError, match=expected):
        voxelize(points, offsets, GRID, backend="cpu")
    # The failure is remembered; "auto" falls back to the reference and says so once.
    with caplog.at_level(logging.WARNING, logger="drivetl.ops"):
        out = voxelize(points, offsets, GRID, backend="auto")
        voxelize(points, offsets, GRID, backend="auto")
    assert sum("torch reference" in r.getMessage() for r in caplog.records) == 1
    assert out.coords.shape[1] == 4


def test_explicit_cuda_without_cuda_raises():
    points, offsets = sample()
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="needs cuda tensors"):
        voxelize(points, offsets, GRID, backend="cuda")


def test_build_ops_command(cpu_ops, capsys):
    from drivetl.commands import build_ops

    parser = argparse.ArgumentParser()
    build_ops.add_arguments(parser)
    assert build_ops.run(parser.parse_args(["--backend", "cpu"])) == 0
    out = capsys.readouterr().out
    assert out.startswith("cpu: built and loaded, in ")
    assert Path(out.split(" in ", 1)[1].strip()).is_dir()
    if torch.version.cuda is None:
        assert build_ops.run(parser.parse_args([])) == 0
        assert "cuda: skipped" in capsys.readouterr().out
        with pytest.raises(BackendUnavailableError, match="no CUDA"):
            build_ops.run(parser.parse_args(["--backend", "cuda"]))
