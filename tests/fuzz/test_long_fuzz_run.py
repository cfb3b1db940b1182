"""The long fuzz run: every fuzz test of this folder with 1,000 cases per reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz._harness import ROOT


@pytest.mark.slow
def test_long_fuzz_run() -> None:
    """The fuzz tests with 1,000 cases per reader (20,000 in all), in a subprocess whose address space
    is capped at 1 GiB over what it maps once its libraries are loaded (about two minutes on a quiet
    machine)."""
    env = dict(os.environ, FUZZ_EXAMPLES="1000", FUZZ_ADDRESS_SPACE_MB="1024")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
         str(Path(__file__).parent)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
