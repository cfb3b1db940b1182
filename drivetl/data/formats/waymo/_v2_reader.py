"""`WaymoV2Reader`: the frames of a Waymo Open Dataset v2 folder (Parquet), iterated or by index."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from drivetl.data.formats.waymo._decode import default_threads
from drivetl.data.formats.waymo._v2_files import Segment, find_segments, is_v2_folder, present_components
from drivetl.data.formats.waymo._v2_frame import WaymoV2Frame
from drivetl.data.records import FrameKey, FrameRecord
from drivetl.errors import DataError


class WaymoV2Reader:
    """The frames of a Waymo v2 dataset folder (``<root>/<component>/<segment>.parquet``).

    Frames come segment by segment (sorted by name), each segment's in timestamp order, as
    `WaymoV2Frame`s with the interface of v1's `WaymoFrame`. ``len(reader)``, ``reader[i]`` and
    ``reader.keys`` give random access. Opening reads each segment's file footers (no rows, except
    a file whose footer cannot place frames in row groups) and checks that every component file is
    there and every frame is in every per-frame component; a problem raises one `DataError` naming
    the file, the component and the segment or frame.

    segments: read only these segments (default: every segment found). threads: threads used to
    decode one frame's range images (default: usable cores, at most 8). skip_corrupt: iteration
    skips frames whose reading raises `DataError` (counted in `skipped`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        segments: Sequence[str] | None = None,
        threads: int | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = Path(root)
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.skip_corrupt = skip_corrupt
        self.skipped = 0
        if not self.root.is_dir():
            raise DataError(
                f"{self.root}: no such folder (a Waymo v2 dataset is a folder of component folders)"
            )
        if not is_v2_folder(self.root):
            found = present_components(self.root)
            what = f"found only empty {', '.join(found)}" if found else "expected lidar/, vehicle_pose/, ..."
            raise DataError(
                f"{self.root}: not a Waymo v2 dataset folder: no component folder with Parquet files ({what})"
            )
        names = find_segments(self.root) if segments is None else list(segments)
        self.segments: dict[str, Segment] = {name: Segment(self.root, name) for name in names}
        self._keys: list[tuple[str, int]] = [
            (name, t) for name, seg in self.segments.items() for t in seg.frames
        ]

    @property
    def keys(self) -> list[FrameKey]:
        """Every frame's key, in reading order."""
        return [FrameKey(s, t) for s, t in self._keys]

    def __len__(self) -> int:
        return len(self._keys)

    def frame(self, segment: str, timestamp_us: int, *, threads: int | None = None) -> WaymoV2Frame:
        """The frame with this key (a DataError when the segment does not list it)."""
        seg = self.segments.get(segment)
        if seg is None or int(timestamp_us) not in set(seg.frames):
            raise DataError(f"{self.root}: no frame {segment}@{timestamp_us} in this dataset")
        return WaymoV2Frame(seg, int(timestamp_us), threads=self.threads if threads is None else threads)

    def __getitem__(self, i: int) -> WaymoV2Frame:
        segment, timestamp = self._keys[i]
        return WaymoV2Frame(self.segments[segment], timestamp, threads=self.threads)

    def __iter__(self) -> Iterator[WaymoV2Frame]:
        self.skipped = 0
        for segment, timestamp in self._keys:
            try:
                frame = WaymoV2Frame(self.segments[segment], timestamp, threads=self.threads)
                if self.skip_corrupt:  # read what the frame holds now, so a damaged frame is skipped here
                    frame.world_from_vehicle, frame.lasers, frame.images, frame.boxes  # noqa: B018
            except DataError:
                if not self.skip_corrupt:
                    raise
                self.skipped += 1
                continue
            yield frame

    def __repr__(self) -> str:
        return f"WaymoV2Reader({str(self.root)!r}, {len(self.segments)} segments, {len(self)} frames)"


class WaymoV2RecordIndex:
    """Random access to the frames of a Waymo v2 folder as `FrameRecord`s: ``len``, ``[i]``
    (one decoding thread per call: data-loading workers run in parallel instead)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.reader = WaymoV2Reader(root, threads=1)
        if len(self.reader) == 0:
            raise DataError(f"{root}: the Waymo v2 dataset has no frames (its vehicle_pose files are empty)")

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> FrameRecord:
        return self.reader[i].to_record()
