"""The Parquet files of a Waymo v2 dataset: which row groups hold a frame, and reading only those.

`ComponentFile` is one component of one segment (``<root>/<component>/<segment>.parquet``). Its
row groups are indexed by frame timestamp from the file footer alone: a file written with one
frame per row group (as Waymo's own files and `WaymoV2Writer` are) has row-group statistics whose
min and max timestamps are equal, which gives every frame's row groups exactly; otherwise the
statistics' ranges narrow down the candidate row groups, and the rows read are filtered by
timestamp; a file without statistics has its timestamp column read once. Reading a frame reads
only its row groups, and only the columns asked for (`read_frame`).

`Segment` is one segment's component files, its frame list (the `vehicle_pose` timestamps), its
calibrations, and the checks that every component file is there and every frame is in every
per-frame component. Every error is one `DataError` line naming the file, the component, the
segment and frame, and what to do.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import Any

import numpy as np

from drivetl.data.formats.waymo import _v2_schema as S
from drivetl.data.records import FrameKey
from drivetl.errors import DataError, short_repr

#: Open Parquet files kept per process (their footers can be large; the index outlives them).
_OPEN_FILES = 32


class ComponentFile:
    """One component's Parquet file of one segment, with its row groups indexed by timestamp."""

    def __init__(self, path: Path, component: str, segment: str) -> None:
        self.path = path
        self.component = component
        self.segment = segment
        self.num_rows = 0
        #: timestamp -> row groups holding it, when the footer says exactly (else None)
        self.exact: dict[int, list[int]] | None = None
        #: (min, max, row group) per row group, when the footer gives ranges only
        self.ranges: list[tuple[int, int, int]] = []
        self._checked: set[str] = set()
        self._index()

    def label(self, frame: int | None = None) -> str:
        """``<path>: component <c>, segment <s>[, frame <t>]``: how every message about it starts."""
        text = f"{self.path}: component {self.component}, segment {self.segment}"
        return text if frame is None else f"{text}, frame {frame}"

    # ------------------------------------------------------------------ opening and the index
    def open_source(self) -> Any:
        """What `pyarrow.parquet.ParquetFile` opens (the path; a test may hand a wrapped file)."""
        return str(self.path)

    def parquet(self):  # -> pyarrow.parquet.ParquetFile
        """The open file (opened on first use; a small per-process cache of open files)."""
        return _open(self)

    def _index(self) -> None:
        pf = self.parquet()
        meta = pf.metadata
        self.num_rows = int(meta.num_rows)
        if self.component in S.SEGMENT_LEVEL:
            return
        self._check_columns(pf, [S.TIMESTAMP], None)
        leaf = next(
            (j for j in range(meta.num_columns) if meta.schema.column(j).path == S.TIMESTAMP), None
        )
        stats = []
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(leaf).statistics if leaf is not None else None
            if st is None or not st.has_min_max or meta.row_group(rg).num_rows == 0:
                stats = None
                break
            stats.append((int(st.min), int(st.max), rg))
        if stats is not None and all(lo == hi for lo, hi, _ in stats):
            self.exact = {}
            for lo, _, rg in stats:
                self.exact.setdefault(lo, []).append(rg)
        elif stats is not None:
            self.ranges = stats
        else:  # no statistics: read the timestamp column once (key column only)
            self.exact = {}
            for rg in range(meta.num_row_groups):
                ts = self.rows(lambda g=rg: pf.read_row_group(g, columns=[S.TIMESTAMP], use_threads=False))
                ts = ts.column(0)
                for t in np.unique(ts.to_numpy()):
                    self.exact.setdefault(int(t), []).append(rg)

    def timestamps(self) -> list[int]:
        """Every frame timestamp in the file, sorted (reads the timestamp column when the footer
        gives only ranges)."""
        if self.exact is not None:
            return sorted(self.exact)
        rgs = [rg for _, _, rg in self.ranges]
        pf = self.parquet()
        table = self.rows(lambda: pf.read_row_groups(rgs, columns=[S.TIMESTAMP], use_threads=False))
        return sorted(int(t) for t in np.unique(table.column(0).to_numpy()))

    def row_groups(self, timestamp: int) -> list[int]:
        """The row groups that may hold `timestamp` (exactly those that do, for an exact index)."""
        if self.exact is not None:
            return self.exact.get(int(timestamp), [])
        return [rg for lo, hi, rg in self.ranges if lo <= timestamp <= hi]

    # ------------------------------------------------------------------ reading
    def rows(self, read: Any, frame: int | None = None):  # -> pyarrow.Table
        """`read()` (a pyarrow read of this file), a damaged page or footer as one DataError."""
        import pyarrow as pa

        try:
            return read()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"{self.label(frame)}: unreadable rows ({short_repr(str(exc), 120)}); the file is "
                "damaged: re-copy it"
            ) from None

    def _check_columns(self, pf, names: list[str], frame: int | None) -> None:
        schema = pf.schema_arrow
        known = S.COLUMNS[self.component]
        for name in names:
            if name in self._checked:
                continue
            index = schema.get_field_index(name)
            if index < 0:
                raise DataError(
                    f"{self.label(frame)}: no column {name!r}; is this a Waymo v2 {self.component} file?"
                )
            col = known[name]
            if not S.type_matches(schema.field(index).type, col):
                raise DataError(
                    f"{self.label(frame)}: column {name!r} holds {schema.field(index).type}, expected "
                    f"{col.describe()}; the file does not follow the Waymo v2 schema (re-export it)"
                )
            self._checked.add(name)

    def read_frame(self, timestamp: int, columns: list[str], *, required: bool = True):  # -> pyarrow.Table
        """The rows of frame `timestamp`, only `columns` (plus the key columns), from only its row groups.

        required: a frame without rows is an error (`missing_frame`); else an empty table.
        """
        import pyarrow.compute as pc

        pf = self.parquet()
        names = list(dict.fromkeys([S.SEGMENT, S.TIMESTAMP, *columns]))
        self._check_columns(pf, names, timestamp)
        rgs = self.row_groups(timestamp)
        if rgs:
            table = self.rows(lambda: pf.read_row_groups(rgs, columns=names, use_threads=False), timestamp)
            if self.exact is None:
                table = table.filter(pc.equal(table.column(S.TIMESTAMP), int(timestamp)))
        else:
            table = pf.schema_arrow.empty_table().select(names)
        if table.num_rows == 0 and required:
            raise self.missing_frame(timestamp)
        self._check_segment(table, timestamp)
        return table

    def read_all(self, columns: list[str]):  # -> pyarrow.Table
        """Every row (a segment-level component: calibrations, a few rows), only `columns` and keys."""
        pf = self.parquet()
        names = list(dict.fromkeys([S.SEGMENT, *columns]))
        self._check_columns(pf, names, None)
        table = self.rows(lambda: pf.read(columns=names, use_threads=False))
        self._check_segment(table, None)
        return table

    def _check_segment(self, table, frame: int | None) -> None:
        segments = set(table.column(S.SEGMENT).to_pylist())
        if segments - {self.segment}:
            other = sorted(s for s in segments if s != self.segment)[0]
            raise DataError(
                f"{self.label(frame)}: holds rows of segment {short_repr(other)}; a v2 file must hold "
                "only the segment it is named after (rename or re-export it)"
            )

    def missing_frame(self, timestamp: int) -> DataError:
        """The error for a frame the segment lists but this component lacks."""
        return DataError(
            f"{self.label(timestamp)}: no rows for this frame although the segment's vehicle_pose lists "
            "it; the file is incomplete (re-copy it, or remove the segment)"
        )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_checked": set()}


_FILES: OrderedDict[tuple[int, str], Any] = OrderedDict()
_FILES_LOCK = Lock()


def _open(cf: ComponentFile):
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = (os.getpid(), str(cf.path))  # a fork does not share the parent's open files
    with _FILES_LOCK:
        pf = _FILES.get(key)
        if pf is not None:
            _FILES.move_to_end(key)
            return pf
    try:
        pf = pq.ParquetFile(cf.open_source())
    except FileNotFoundError:
        raise DataError(f"{cf.label()}: the file is gone (moved or deleted while reading)") from None
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{cf.label()}: not a readable Parquet file ({short_repr(str(exc), 120)}); re-copy it"
        ) from None
    with _FILES_LOCK:
        _FILES[key] = pf
        while len(_FILES) > _OPEN_FILES:
            _FILES.popitem(last=False)
    return pf


def forget_open_files() -> None:
    """Close this process's cached Parquet files (tests; a long-lived process reading many datasets)."""
    with _FILES_LOCK:
        _FILES.clear()


def component_path(root: Path, component: str, segment: str) -> Path:
    """``<root>/<component>/<segment>.parquet``."""
    return root / component / f"{segment}.parquet"


def present_components(root: Path) -> list[str]:
    """The components of `ALL` that have a folder under `root`."""
    return [c for c in S.ALL if (root / c).is_dir()]


def find_segments(root: Path) -> list[str]:
    """Every segment that has a file in any component folder, sorted."""
    names: set[str] = set()
    for comp in present_components(root):
        names.update(p.stem for p in (root / comp).glob("*.parquet") if not p.name.startswith("."))
    return sorted(names)


def is_v2_folder(path: str | os.PathLike) -> bool:
    """True when `path` is a folder with a component folder of Parquet files (lidar/, vehicle_pose/, ...)."""
    root = Path(path)
    return root.is_dir() and any(any((root / c).glob("*.parquet")) for c in present_components(root))


class Segment:
    """One segment of a v2 dataset: its component files, frames (sorted timestamps) and checks.

    The components with a folder under `root` are this dataset's; each must have the segment's file
    (the lidar, lidar_calibration and vehicle_pose components must exist at all). Every frame listed
    by vehicle_pose must be in lidar and camera_image, and lidar's frames in vehicle_pose, checked
    here from the footers when they index frames exactly, else when the frame is read.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.files: dict[str, ComponentFile] = {}
        #: what frames read once per segment (calibrations), filled by the frame module
        self.cache: dict[str, Any] = {}
        present = present_components(root)
        for comp in (*S.REQUIRED, *(c for c in present if c not in S.REQUIRED)):
            path = component_path(root, comp, name)
            if not path.is_file():
                others = "" if comp not in present else f" (other segments have {comp} files)"
                raise DataError(
                    f"{path}: missing: component {comp} of segment {name}{others}; copy the segment's "
                    f"{comp} file there, or remove the segment's other files"
                )
            self.files[comp] = ComponentFile(path, comp, name)
        self.frames: list[int] = self.files[S.VEHICLE_POSE].timestamps()
        listed = set(self.frames)
        for comp in S.EVERY_FRAME:
            cf = self.files.get(comp)
            if cf is None or cf.exact is None or comp == S.VEHICLE_POSE or not self.every_frame(comp):
                continue
            missing = sorted(listed - set(cf.exact))
            if missing:
                raise cf.missing_frame(missing[0])
            extra = sorted(set(cf.exact) - listed)
            if extra and comp == S.LIDAR:
                vp = self.files[S.VEHICLE_POSE]
                raise DataError(
                    f"{vp.label(extra[0])}: no rows for this frame although the segment's lidar has it; "
                    "the file is incomplete (re-copy it, or remove the segment)"
                )

    def every_frame(self, component: str) -> bool:
        """True when every frame must have rows in `component`: lidar and vehicle_pose always,
        camera_image when its file has any rows (a rig without cameras writes none)."""
        cf = self.files.get(component)
        if cf is None or component not in S.EVERY_FRAME:
            return False
        return component != S.CAMERA_IMAGE or cf.num_rows > 0

    def has(self, component: str) -> bool:
        """True when the dataset has `component` (then this segment has its file)."""
        return component in self.files

    def key(self, timestamp: int) -> FrameKey:
        """The `FrameKey` of one of this segment's frames."""
        return FrameKey(self.name, int(timestamp))
