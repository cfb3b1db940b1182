"""Random access to the Frames of Waymo v1 TFRecord files, by record index."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

from drivetl.data.formats._tfrecord import masked_crc32c
from drivetl.data.formats.waymo._frame import WaymoFrame
from drivetl.data.formats.waymo._reader import parse_frame
from drivetl.data.records import FrameRecord
from drivetl.errors import DataError

__all__ = ["WaymoRecordIndex"]

_HEADER = struct.Struct("<QI")


class WaymoRecordIndex:
    """Random access to the Frames of Waymo v1 TFRecord files: ``len``, ``[i] -> FrameRecord``.

    The index holds (file, byte offset) per record, found by walking the record headers once.
    """

    def __init__(self, files: Sequence[str | Path]):
        self.entries: list[tuple[str, int]] = []
        for path in files:
            size = Path(path).stat().st_size
            with open(path, "rb") as f:
                offset = 0
                while offset < size:
                    header = f.read(12)
                    if len(header) < 12:
                        raise DataError(
                            f"{path}: truncated record header at byte offset {offset}; "
                            "the file is damaged (re-copy it)"
                        )
                    length, _ = _HEADER.unpack(header)
                    self.entries.append((str(path), offset))
                    offset += 16 + length
                    f.seek(offset)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> FrameRecord:
        path, offset = self.entries[i]
        where = f"{path}: record at byte offset {offset}"
        with open(path, "rb") as f:
            f.seek(offset)
            length, _ = _HEADER.unpack(f.read(12))
            data = f.read(length)
            footer = f.read(4)
        if len(data) < length or len(footer) < 4:
            raise DataError(f"{where}: truncated record; the file is damaged (re-copy it)")
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise DataError(f"{where}: data CRC mismatch; the file is damaged (re-copy it)")
        return WaymoFrame(parse_frame(data, where), where=where, threads=1).to_record()
