"""Random access to the Frames of Waymo v1 TFRecord files, by record index."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drivetl.data.formats._tfrecord import TFRecordReader
from drivetl.data.formats.waymo._frame import WaymoFrame
from drivetl.data.formats.waymo._matrix import MatrixFormatError, _varint
from drivetl.data.formats.waymo._reader import parse_frame
from drivetl.data.records import FrameKey, FrameRecord
from drivetl.errors import DataError

#: bytes read from the start of a record to find its key (Frame.context comes first, a few kB)
KEY_PREFIX_BYTES = 64 * 1024

__all__ = ["WaymoRecordIndex"]


class WaymoRecordIndex:
    """Random access to the Frames of Waymo v1 TFRecord files: ``len``, ``[i] -> FrameRecord``.

    The index holds (file, byte offset) per record, found by walking the record headers once
    through `TFRecordReader.offsets` (length CRCs checked, lengths bounded, truncation detected);
    a file without records is refused. `check_first` parses the first record as a Frame, so a
    file that is framed correctly but holds something else fails at start-up, not in a worker.
    """

    def __init__(self, files: Sequence[str | Path], check_first: bool = True):
        self.entries: list[tuple[str, int, int]] = []  # (file, byte offset, record index in the file)
        for path in files:
            offsets = TFRecordReader(path).offsets()
            if not offsets:
                raise DataError(f"{path}: no records (an empty TFRecord file); remove it or re-copy it")
            self.entries.extend((str(path), offset, k) for k, offset in enumerate(offsets))
        if check_first and self.entries:
            self[0]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> FrameRecord:
        path, offset, k = self.entries[i]
        where = f"{path}: record {k} at byte offset {offset}"
        data = TFRecordReader(path).read_at(offset, k)
        return WaymoFrame(parse_frame(data, where), where=where, threads=1).to_record()

    def record_key(self, i: int) -> FrameKey:
        """The key (context name, timestamp) of record `i`, without decoding its range images.

        Reads the first `KEY_PREFIX_BYTES` of the record and finds ``Frame.context.name`` (field 1 of
        field 1) and ``Frame.timestamp_micros`` (field 2) in the protobuf wire format; Waymo's files
        write them first. When they are not both in the prefix (or the bytes are unusual), the whole
        record is read, CRC-checked and parsed as a Frame proto (still no range image decoded)."""
        path, offset, k = self.entries[i]
        with open(path, "rb") as f:
            f.seek(offset)
            head = f.read(12 + KEY_PREFIX_BYTES)
        length = int.from_bytes(head[:8], "little")  # the header walk checked it already
        key = _key_from_prefix(memoryview(head)[12 : 12 + length])
        if key is not None:
            return key
        where = f"{path}: record {k} at byte offset {offset}"
        frame = parse_frame(TFRecordReader(path).read_at(offset, k), where)
        return FrameKey(frame.context.name, int(frame.timestamp_micros))


def _key_from_prefix(buf: memoryview) -> FrameKey | None:
    """Frame.context.name and Frame.timestamp_micros from the start of a serialized Frame, or None
    when they are not both there before another field's bytes run past the prefix."""
    name: str | None = None
    stamp: int | None = None
    pos = 0
    try:
        while pos < len(buf) and (name is None or stamp is None):
            tag, pos = _varint(buf, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                value, pos = _varint(buf, pos)
                if field == 2:
                    stamp = value
            elif wire == 2:
                size, pos = _varint(buf, pos)
                if pos + size > len(buf):
                    return None
                if field == 1:
                    name = _context_name(buf[pos : pos + size])
                    if name is None:
                        return None
                pos += size
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                return None
    except MatrixFormatError:
        return None
    if name is None or stamp is None:
        return None
    return FrameKey(name, stamp)


def _context_name(buf: memoryview) -> str | None:
    """Context.name (field 1) of a serialized Context; "" when absent, None when unreadable."""
    pos = 0
    name = ""
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if field == 1:
                try:
                    name = bytes(buf[pos : pos + size]).decode("utf-8")
                except UnicodeDecodeError:
                    return None
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            return None
    return name if pos == len(buf) else None
