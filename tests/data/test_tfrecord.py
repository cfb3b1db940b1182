"""TFRecord framing: round trip, CRC values, truncation and corruption errors, skipping."""

from __future__ import annotations

import struct

import pytest

from drivetl.data.formats._tfrecord import TFRecordReader, TFRecordWriter, masked_crc32c, read_records
from drivetl.errors import DataError

RECORDS = [b"", b"a", b"hello world" * 50, bytes(range(256)) * 7]


def _write(path, records=RECORDS):
    with TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    return path


def test_masked_crc_known_value() -> None:
    # CRC-32C("123456789") = 0xE3069283 (the standard check value); masked per TFRecord's rule.
    crc = 0xE3069283
    expected = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == expected


def test_round_trip_and_offsets(tmp_path) -> None:
    path = _write(tmp_path / "a.tfrecord")
    assert list(read_records(path)) == RECORDS
    offsets = [off for _, off, _ in TFRecordReader(path).records()]
    expected, pos = [], 0
    for r in RECORDS:
        expected.append(pos)
        pos += 16 + len(r)
    assert offsets == expected
    assert path.stat().st_size == pos
    raw = path.read_bytes()
    assert struct.unpack_from("<Q", raw, 0)[0] == len(RECORDS[0])


def test_writer_is_atomic(tmp_path) -> None:
    path = tmp_path / "b.tfrecord"
    _write(path, [b"old"])
    with pytest.raises(RuntimeError):
        with TFRecordWriter(path) as w:
            w.write(b"new")
            raise RuntimeError("stop")
    assert list(read_records(path)) == [b"old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tfrecord"]


def test_truncated_file_names_record_and_offset(tmp_path) -> None:
    path = _write(tmp_path / "t.tfrecord")
    raw = path.read_bytes()
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(raw[:-10])
    with pytest.raises(DataError, match=r"cut\.tfrecord: record 3 at byte offset 599: truncated record"):
        list(read_records(cut))
    reader = TFRecordReader(cut, skip_corrupt=True)
    assert list(reader) == RECORDS[:3]
    assert reader.skipped == 1


def test_flipped_data_byte_is_a_crc_error(tmp_path) -> None:
    path = _write(tmp_path / "f.tfrecord")
    raw = bytearray(path.read_bytes())
    raw[33 + 12 + 5] ^= 0x40  # inside record 2's data (record 0: 16 bytes, record 1: 17 bytes)
    bad = tmp_path / "flip.tfrecord"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"flip\.tfrecord: record 2 at byte offset 33: data CRC mismatch"):
        list(read_records(bad))
    reader = TFRecordReader(bad, skip_corrupt=True)
    assert list(reader) == [RECORDS[0], RECORDS[1], RECORDS[3]]
    assert reader.skipped == 1


def test_flipped_length_byte_stops_the_file(tmp_path) -> None:
    path = _write(tmp_path / "l.tfrecord")
    raw = bytearray(path.read_bytes())
    raw[16] ^= 0x01  # record 1's length field
    bad = tmp_path / "len.tfrecord"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="record 1 at byte offset 16: length CRC mismatch"):
        list(read_records(bad))
    reader = TFRecordReader(bad, skip_corrupt=True)
    assert list(reader) == [RECORDS[0]]
    assert reader.skipped == 1


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match="no such TFRecord file"):
        TFRecordReader(tmp_path / "nope.tfrecord")


def test_a_length_past_the_end_of_the_file_is_refused_before_reading(tmp_path) -> None:
    """A header declaring 1 GiB (with a valid length CRC) in a 200-byte file: refused as truncated
    without reserving the gigabyte (a buffered read(n) allocates n bytes first)."""
    import tracemalloc

    length = struct.pack("<Q", 1 << 30)
    path = tmp_path / "big.tfrecord"
    path.write_bytes(length + struct.pack("<I", masked_crc32c(length)) + b"x" * 188)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"big.tfrecord: record 0 at byte offset 0: truncated record"):
            list(read_records(path))
        with pytest.raises(DataError, match="record 0 at byte offset 0"):
            TFRecordReader(path).read_at(0, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert list(read_records(path, skip_corrupt=True)) == []
