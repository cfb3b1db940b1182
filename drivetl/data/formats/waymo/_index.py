"""Random access to the Frames of Waymo v1 TFRecord files, by record index."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drivetl.data.formats._tfrecord import TFRecordReader
from drivetl.data.formats.waymo._frame import WaymoFrame
from drivetl.data.formats.waymo._reader import parse_frame
from drivetl.data.records import FrameRecord
from drivetl.errors import DataError

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
