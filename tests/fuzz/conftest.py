"""The slow run's address-space cap for the fuzz tests (`_harness.cap_address_space`)."""

from __future__ import annotations

import os

import pytest

from tests.fuzz._harness import cap_address_space


@pytest.fixture(scope="session", autouse=True)
def _address_space():
    """Under FUZZ_ADDRESS_SPACE_MB, cap the address space once the heavy libraries are loaded."""
    if os.environ.get("FUZZ_ADDRESS_SPACE_MB"):
        import open3d  # noqa: F401
        import pyarrow.parquet  # noqa: F401
        import rosbags.rosbag1  # noqa: F401
        import torch  # noqa: F401
        from waymo_open_dataset import dataset_pb2  # noqa: F401

        cap_address_space()
    yield
