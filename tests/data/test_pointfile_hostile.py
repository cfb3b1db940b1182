"""PCD files from strangers: sizes in the header are bounded before anything is allocated.

Each case ends in one DataError naming the file, within bounded memory.
"""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from drivetl.data.formats.pointfile import read_points, write_points
from drivetl.errors import DataError

HEAD = "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\n"


def _read_bounded(path: Path, match: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=match) as info:
            read_points(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value) and len(str(info.value)) < 400
    assert peak < 32 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_huge_count_is_refused_before_allocation(tmp_path: Path) -> None:
    path = tmp_path / "count.pcd"
    text = HEAD.format(n=1).replace("COUNT 1 1 1", "COUNT 1 1 12000000") + "DATA ascii\n1 2 3\n"
    path.write_text(text)
    assert path.stat().st_size < 256
    _read_bounded(path, "12000002 values per point")


@pytest.mark.parametrize(
    "edit, match",
    [
        (("DATA ascii", "DATA"), "header line DATA has no value"),
        (("POINTS 2", "POINTS"), "header line POINTS has no value"),
        (("POINTS 2", "POINTS many"), "POINTS must be whole numbers, got 'many'"),
        (("POINTS 2", "POINTS -5"), "POINTS must not be negative"),
        (("SIZE 4 4 4", "SIZE 4 4 x" + "y" * 5000), r"SIZE must be whole numbers, got '4 4 xy+\.\.\.y+'$"),
    ],
    ids=["empty-data", "empty-points", "points-word", "points-negative", "size-long-junk"],
)
def test_malformed_header_lines(tmp_path: Path, edit: tuple[str, str], match: str) -> None:
    path = tmp_path / "bad.pcd"
    path.write_text((HEAD.format(n=2) + "DATA ascii\n1 2 3\n4 5 6\n").replace(*edit))
    _read_bounded(path, match)


def test_ascii_body_with_a_word(tmp_path: Path) -> None:
    path = tmp_path / "word.pcd"
    path.write_text(HEAD.format(n=2) + "DATA ascii\n1 2 3\n4 five 6\n")
    _read_bounded(path, "non-number 'five'")


def _compressed(n: int, usize: int, stream: bytes) -> bytes:
    head = HEAD.format(n=n) + "DATA binary_compressed\n"
    return head.encode() + struct.pack("<II", len(stream), usize) + stream


def test_compressed_size_claims_are_checked_before_inflating(tmp_path: Path) -> None:
    path = tmp_path / "claim.pcd"
    # a 4 GB claim for a few bytes: refused before the decompressor runs
    path.write_bytes(_compressed(357_913_941, 357_913_941 * 12, b"\x00\x01"))
    _read_bounded(path, "declares 4294967292 bytes uncompressed")


def test_corrupt_lzf_stops_at_the_declared_size(tmp_path: Path) -> None:
    # one literal byte, then back references of 264 bytes each: ~88x inflation per 3 bytes
    stream = b"\x00\x00" + b"\xe0\xfd\x00" * 400
    n = 10  # 120 bytes declared, the stream would inflate to ~105 kB
    path = tmp_path / "lzf.pcd"
    path.write_bytes(_compressed(n, n * 12, stream))
    _read_bounded(path, "corrupt LZF stream")


def test_valid_files_still_read(tmp_path: Path) -> None:
    pts = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_points(tmp_path / "ok.pcd", pts, ("x", "y", "z", "intensity"))
    got, cols = read_points(tmp_path / "ok.pcd")
    assert cols == ("x", "y", "z", "intensity") and np.array_equal(got, pts)
