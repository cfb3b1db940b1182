"""PCD and PLY files from strangers: sizes in the header are bounded before anything is allocated.

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


def test_a_ply_file_cut_inside_its_header_is_one_line_not_a_crash(tmp_path) -> None:
    """The fuzz suite's first PLY finding: a file cut after ``comment`` crashed the process
    (a segmentation fault in open3d's reader). Read in a child process, so a crash fails the test
    instead of ending the run."""
    import subprocess
    import sys

    path = tmp_path / "cut.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\ncomment")
    code = (
        "import sys\nfrom drivetl.data.formats.pointfile import read_points\n"
        "from drivetl.errors import DataError\n"
        "try:\n    read_points(sys.argv[1])\nexcept DataError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"{path}: PLY header has no end_header line in its first 65536 bytes"


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"element vertex 1099511627776\nproperty float x\nproperty float y\n", "truncated"),
        (b"element vertex 2\nproperty list uchar int x\n", "list properties"),
        (b"element vertex 2\nproperty float x\nproperty float x\n", "names a property twice"),
        (b"element vertex 2\nproperty quad x\n", "not a property of a known type"),
        (b"element vertex -2\n", "not a PLY header line"),
    ],
    ids=["count_past_the_body", "list_property", "twice", "unknown_type", "negative_count"],
)
def test_damaged_ply_headers(tmp_path, header: bytes, match: str) -> None:
    path = tmp_path / "x.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\n" + header + b"end_header\n" + b"\0" * 24)
    _read_bounded(path, match)


def test_ply_ascii_and_big_endian_read_like_the_binary_file(tmp_path) -> None:
    pts = np.array([[1.0, 2.0, 3.0, 10.0], [4.0, 5.0, 6.0, 20.0]], np.float32)
    head = "element face 1\nproperty uchar n\nelement vertex 2\n" + "".join(
        f"property float {c}\n" for c in ("x", "y", "z", "intensity")
    )
    ascii_path, big_path = tmp_path / "a.ply", tmp_path / "b.ply"
    ascii_path.write_bytes(
        f"ply\nformat ascii 1.0\n{head}end_header\n7\n1 2 3 10\n4 5 6 20\n".encode()
    )
    big_head = f"ply\nformat binary_big_endian 1.0\n{head}end_header\n".encode()
    big_path.write_bytes(big_head + b"\x07" + pts.astype(">f4").tobytes())
    for path in (ascii_path, big_path):
        back, cols = read_points(path)
        assert cols == ("x", "y", "z", "intensity")
        np.testing.assert_array_equal(back, pts)
