"""Hostile Argoverse 2 files: one DataError line naming the file, whatever pyarrow raises."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from drivetl.data.formats.av2 import read_feather
from drivetl.errors import DataError


def test_a_compressed_buffer_declaring_an_impossible_size_is_one_line(tmp_path) -> None:
    """An lz4 buffer of a feather file whose declared uncompressed length is 2**58 bytes: pyarrow's
    ArrowMemoryError (found by the fuzz suite) used to escape; nothing near that size is allocated."""
    path = tmp_path / "annotations.feather"
    feather.write_feather(pa.table({"num_interior_pts": np.arange(1000, dtype=np.int64)}), str(path),
                          compression="lz4")
    raw = path.read_bytes()
    declared = struct.pack("<q", 8000)  # each compressed buffer starts with its uncompressed length
    assert raw.count(declared) == 1
    path.write_bytes(raw.replace(declared, struct.pack("<q", 2**58)))
    with pytest.raises(DataError, match=r"annotations.feather: not a readable feather file") as info:
        read_feather(path, ("num_interior_pts",))
    assert "\n" not in str(info.value)


def test_a_file_that_is_not_feather_is_one_line(tmp_path) -> None:
    path = tmp_path / "city_SE3_egovehicle.feather"
    path.write_bytes(b"ARROW1\x00\x00" + b"\x00" * 64)
    with pytest.raises(DataError, match="city_SE3_egovehicle.feather: not a readable feather file"):
        read_feather(path, ("timestamp_ns",))
