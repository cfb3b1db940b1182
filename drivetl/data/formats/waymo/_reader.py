"""`WaymoV1Reader`: stream the frames of one Waymo v1 TFRecord file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from drivetl.data.formats._tfrecord import TFRecordReader
from drivetl.data.formats.waymo._decode import default_threads
from drivetl.data.formats.waymo._frame import WaymoFrame
from drivetl.errors import DataError


def parse_frame(data: bytes, where: str):  # -> dataset_pb2.Frame
    """Parse one record as a Waymo `Frame` proto; DataError naming `where` when it is not one."""
    from google.protobuf.message import DecodeError
    from waymo_open_dataset import dataset_pb2

    frame = dataset_pb2.Frame()
    try:
        frame.ParseFromString(data)
    except DecodeError as exc:
        raise DataError(
            f"{where}: not a Waymo v1 Frame ({exc}); is this a Waymo Open Dataset v1 file?"
        ) from None
    if not frame.context.name and not frame.timestamp_micros:
        raise DataError(
            f"{where}: not a Waymo v1 Frame (no context name and no timestamp); "
            "is this a Waymo Open Dataset v1 file?"
        )
    return frame


class WaymoV1Reader:
    """Iterate the frames (`WaymoFrame`) of a Waymo Open Dataset v1 TFRecord, one record in memory at a time.

    skip_corrupt: skip records with a bad CRC, records that are not Frames and frames with a laser
        lacking calibration, counting them in `skipped` (valid after iteration); otherwise the first
        such record raises `DataError` naming the file, record index and byte offset.
    threads: threads used to decode one frame's range images (default: usable cores, at most 8).
    check_crc: verify each record's data CRC (on by default; CRC-32C runs at several GB/s).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        skip_corrupt: bool = False,
        threads: int | None = None,
        check_crc: bool = True,
    ) -> None:
        self.path = Path(path)
        self.skip_corrupt = skip_corrupt
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.skipped = 0
        self._records = TFRecordReader(self.path, skip_corrupt=skip_corrupt, check_crc=check_crc)

    def __iter__(self) -> Iterator[WaymoFrame]:
        self.skipped = 0
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: empty file (0 bytes, no records); remove it or re-copy it")
        try:
            for index, offset, data in self._records.records():
                where = f"{self.path}: record {index} at byte offset {offset}"
                try:
                    frame = WaymoFrame(parse_frame(data, where), where=where, threads=self.threads)
                except DataError:
                    if not self.skip_corrupt:
                        raise
                    self.skipped += 1
                    continue
                yield frame
        finally:
            self.skipped += self._records.skipped

    def __repr__(self) -> str:
        return f"WaymoV1Reader({str(self.path)!r})"
