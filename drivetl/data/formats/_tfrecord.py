"""TFRecord framing without TensorFlow: a streaming reader and an atomic writer.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with ``masked_crc32c(x) = ((crc >> 15 | crc << 17) + 0xa282ead8) mod 2**32`` over CRC-32C (Castagnoli).
CRCs are computed with the compiled `crc32c` package. A truncated file or a CRC mismatch raises
`DataError` naming the file, the record index and the byte offset of the record; with
``skip_corrupt=True`` a record whose data CRC fails is skipped and counted (`TFRecordReader.skipped`),
and a damaged length field or a truncated tail ends the file (counted as one skip), since the framing
after it cannot be trusted.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import crc32c as _crc32c

from drivetl._io import atomic_write
from drivetl.errors import DataError

_MASK_DELTA = 0xA282EAD8
_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")
#: Refuse records larger than this (a corrupt length would otherwise try to allocate terabytes).
MAX_RECORD_BYTES = 1 << 31


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """TFRecord's masked CRC-32C of `data` (uint32)."""
    crc = _crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class TFRecordReader:
    """Stream the records of one TFRecord file; memory holds one record at a time.

    Iterating yields each record's bytes. `records()` yields ``(index, byte_offset, data)``.
    `skipped` counts records skipped under ``skip_corrupt=True`` (valid after iteration).
    ``check_crc=False`` skips the data CRC (the length CRC is always checked).
    """

    def __init__(
        self, path: str | os.PathLike, *, skip_corrupt: bool = False, check_crc: bool = True
    ) -> None:
        self.path = Path(path)
        self.skip_corrupt = skip_corrupt
        self.check_crc = check_crc
        self.skipped = 0
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such TFRecord file")

    def __iter__(self) -> Iterator[bytes]:
        for _, _, data in self.records():
            yield data

    def _fail(self, index: int, offset: int, what: str) -> None:
        """Raise, or count a skip when skipping corrupt records."""
        if not self.skip_corrupt:
            raise DataError(
                f"{self.path}: record {index} at byte offset {offset}: {what}; the file is damaged "
                "(re-download or re-copy it, or read with skip_corrupt=True to skip bad records)"
            )
        self.skipped += 1

    def records(self) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(record index, byte offset of its header, data bytes)`` for each good record."""
        self.skipped = 0
        with open(self.path, "rb") as f:
            yield from self._records(f)

    def _header(self, f: BinaryIO, index: int, offset: int) -> int | None:
        """The data length of the record whose header starts at `offset` (`f` positioned there).

        None at a clean end of file, or after a damaged header when skipping corrupt records.
        The length CRC is always checked and the length bounded before anything is allocated.
        """
        header = f.read(12)
        if not header:
            return None
        if len(header) < 12:
            self._fail(index, offset, f"truncated header ({len(header)} of 12 bytes)")
            return None
        length_bytes = header[:8]
        (length,) = _LEN.unpack(length_bytes)
        (length_crc,) = _CRC.unpack_from(header, 8)
        if masked_crc32c(length_bytes) != length_crc:
            self._fail(index, offset, "length CRC mismatch (not a TFRecord file, or a damaged header)")
            return None
        if length > MAX_RECORD_BYTES:
            self._fail(index, offset, f"implausible record length {length}")
            return None
        return length

    def _body(self, f: BinaryIO, index: int, offset: int, length: int) -> bytes | None:
        """The record's data after its header, CRC-checked; None when skipped. A length the rest of
        the file cannot hold is refused before anything is read (``read(n)`` reserves n bytes)."""
        left = os.fstat(f.fileno()).st_size - f.tell()
        if length + 4 > left:
            self._fail(
                index,
                offset,
                f"truncated record (expected {length} data bytes + 4 CRC bytes, file ends after "
                f"{max(left, 0)})",
            )
            return None
        data = f.read(length)
        footer = f.read(4)
        if len(data) < length or len(footer) < 4:
            self._fail(
                index,
                offset,
                f"truncated record (expected {length} data bytes + 4 CRC bytes, file ends after "
                f"{len(data) + len(footer)})",
            )
            return None
        if self.check_crc and masked_crc32c(data) != _CRC.unpack(footer)[0]:
            self._fail(index, offset, "data CRC mismatch")
            return None
        return data

    def _records(self, f: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
        index = 0
        offset = 0
        while True:
            length = self._header(f, index, offset)
            if length is None:
                return
            data = self._body(f, index, offset, length)
            if data is None and f.tell() < offset + 16 + length:
                return  # truncated: the framing after it cannot be trusted
            if data is not None:
                yield index, offset, data
            index += 1
            offset += 16 + length

    def offsets(self) -> list[int]:
        """Byte offsets of every record, from the headers alone (data skipped, length CRCs checked).

        A record that would run past the end of the file is reported as truncated.
        """
        size = self.path.stat().st_size
        found: list[int] = []
        with open(self.path, "rb") as f:
            offset = 0
            while offset < size:
                length = self._header(f, len(found), offset)
                if length is None:
                    break
                if offset + 16 + length > size:
                    self._fail(
                        len(found), offset,
                        f"truncated record (declares {length} data bytes, the file ends {size - offset - 12} "
                        "bytes after the header)",
                    )
                    break
                found.append(offset)
                offset += 16 + length
                f.seek(offset)
        return found

    def read_at(self, offset: int, index: int = -1) -> bytes:
        """The data of the record whose header starts at byte `offset`, checked like any record."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            length = self._header(f, index, offset)
            data = None if length is None else self._body(f, index, offset, length)
        if data is None:
            raise DataError(f"{self.path}: record {index} at byte offset {offset}: unreadable (skipped)")
        return data


def read_records(path: str | os.PathLike, *, skip_corrupt: bool = False) -> Iterator[bytes]:
    """Yield the data of every record of the TFRecord file `path` (see `TFRecordReader`)."""
    return iter(TFRecordReader(path, skip_corrupt=skip_corrupt))


def frame_record(data: bytes) -> bytes:
    """One record's framed bytes (header, data, footer)."""
    length = _LEN.pack(len(data))
    return length + _CRC.pack(masked_crc32c(length)) + bytes(data) + _CRC.pack(masked_crc32c(data))


class TFRecordWriter:
    """Write records to a TFRecord file atomically: a temporary file renamed to `path` on `close()`.

    Use as a context manager; an exception inside the block discards the partial file, so `path`
    holds either its previous content or the complete new file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._ctx = atomic_write(self.path, "wb")
        self._file: BinaryIO | None = self._ctx.__enter__()
        self.count = 0

    def write(self, data: bytes) -> None:
        """Append one record."""
        if self._file is None:
            raise ValueError(f"{self.path}: writer is closed")
        self._file.write(frame_record(data))
        self.count += 1

    def close(self) -> None:
        """Finish the file (rename the temporary file into place)."""
        if self._file is not None:
            self._file = None
            self._ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException | None = None) -> None:
        """Discard the partial file."""
        if self._file is not None:
            self._file = None
            err = exc or RuntimeError("aborted")
            try:
                self._ctx.__exit__(type(err), err, err.__traceback__)
            except BaseException as raised:  # the context re-raises the error it was given
                if raised is not err:
                    raise

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)
