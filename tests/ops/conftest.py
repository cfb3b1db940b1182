"""Fixtures of the ops tests: the CPU kernels built once, and the CUDA compile check run early.

The CUDA compile check (`nvcc -c` on the kernel file, one architecture) is a real compile of
about 15 CPU-seconds, nearly all of it single-threaded. It starts in the background when the first
ops test runs, so it overlaps the JIT build of the CPU kernels and the other tests on a second
core; `test_cuda_kernel_source_compiles_without_torch` waits for it and checks its result.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CU = Path(__file__).resolve().parents[2] / "drivetl" / "ops" / "csrc" / "voxelize_cuda.cu"
NVCC_TEST = "test_cuda_kernel_source_compiles_without_torch"


def nvcc_command(cu: Path, out: Path) -> list[str]:
    """Compile the kernel file alone (no torch include paths) for one architecture, no device link."""
    return ["nvcc", "-c", "-std=c++17", "-gencode", "arch=compute_80,code=sm_80", str(cu), "-o", str(out)]


@pytest.fixture(scope="session", autouse=True)
def nvcc_compile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The background `nvcc` process (None when nvcc is absent or its test is not selected)."""
    wanted = any(item.name == NVCC_TEST for item in request.session.items)
    if shutil.which("nvcc") is None or not wanted:
        yield None
        return
    out = tmp_path_factory.mktemp("nvcc") / "voxelize_cuda.o"
    cmd = nvcc_command(CU, out)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="session")
def cpu_ops() -> None:
    """Build (or load the cached build of) the CPU kernels once per session."""
    from drivetl.ops import build

    build("cpu")
