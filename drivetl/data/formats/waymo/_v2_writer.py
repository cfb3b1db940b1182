"""`WaymoV2Writer`: write frames as a Waymo v2 dataset folder (Parquet, one file per component per segment).

Every component file is written with one row group per frame, so a reader can fetch one frame by
reading only its row groups; columns and types are the official v2 schema (`_v2_schema`). Each
file goes to a temporary name in its component folder and is renamed into place when its segment
is finished (vehicle_pose last: a segment with a vehicle_pose file is complete), so an interrupted
run leaves no half-written file where a complete one is expected.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from drivetl._io import atomic_write
from drivetl.data.formats.waymo import _v2_schema as S
from drivetl.data.formats.waymo._calib import beam_inclination_fields
from drivetl.data.formats.waymo._names import (
    CAMERA_IDS,
    CAMERA_NAMES,
    LASER_IDS,
    LASER_NAMES,
    TYPE_FROM_CLASS,
)
from drivetl.data.formats.waymo._v2_files import component_path
from drivetl.data.formats.waymo._writer import RangeImageData, check_frame, jpeg_bytes
from drivetl.data.records import FrameRecord
from drivetl.errors import DataError

#: The order files are finished in: vehicle_pose (the frame list) last.
_FINISH_ORDER = (
    S.LIDAR_CALIBRATION,
    S.CAMERA_CALIBRATION,
    S.LIDAR,
    S.LIDAR_POSE,
    S.CAMERA_IMAGE,
    S.LIDAR_BOX,
    S.VEHICLE_POSE,
)


def segment_complete(root: str | os.PathLike, segment: str) -> bool:
    """True when `segment`'s files under `root` were all finished by a writer (its vehicle_pose
    file, the one written last, exists)."""
    return component_path(Path(root), S.VEHICLE_POSE, segment).is_file()


def _float_lists(arrays: list[np.ndarray | None]):  # -> pyarrow.ListArray
    """A list<float32> column of flattened arrays (None: a null cell), built from one buffer."""
    import pyarrow as pa

    flat = [np.asarray(a, dtype=np.float32).reshape(-1) for a in arrays if a is not None]
    sizes = [0 if a is None else int(np.asarray(a).size) for a in arrays]
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    values = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.float32), type=pa.float32())
    mask = pa.array([a is None for a in arrays])
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(pa.float32()), mask=mask)


def _transform(m: np.ndarray) -> list[float]:
    return np.asarray(m, dtype=np.float64).reshape(-1).tolist()


class _SegmentFiles:
    """The open (temporary) files of one segment, one `ParquetWriter` per component."""

    def __init__(self, root: Path, segment: str, compression: str) -> None:
        import pyarrow.parquet as pq

        self.segment = segment
        self.frames = 0
        self.calibrated = False
        self._writers: dict[str, Any] = {}
        self._contexts: dict[str, contextlib.AbstractContextManager] = {}
        try:
            for comp in _FINISH_ORDER:
                ctx = atomic_write(component_path(root, comp, segment), "wb")
                handle = ctx.__enter__()
                self._contexts[comp] = ctx
                self._writers[comp] = pq.ParquetWriter(handle, S.arrow_schema(comp), compression=compression)
        except BaseException as exc:
            self.abort(exc)
            raise

    def write(self, component: str, rows: dict[str, Any]) -> None:
        """Append `rows` (column -> values or an Arrow array) to `component` as one row group (no row
        group when there are no rows)."""
        import pyarrow as pa

        schema = S.arrow_schema(component)
        if not len(rows[S.SEGMENT]):
            return
        table = pa.Table.from_pydict({f.name: rows.get(f.name) for f in schema}, schema=schema)
        self._writers[component].write_table(table, row_group_size=max(1, table.num_rows))

    def finish(self) -> None:
        """Close every file and rename it into place, vehicle_pose last."""
        for comp in _FINISH_ORDER:
            self._writers.pop(comp).close()
            self._contexts.pop(comp).__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        """Discard every temporary file."""
        for comp in list(self._contexts):
            writer = self._writers.pop(comp, None)
            with contextlib.suppress(Exception):
                if writer is not None:
                    writer.close()
            ctx = self._contexts.pop(comp)
            with contextlib.suppress(BaseException):
                ctx.__exit__(type(exc), exc, exc.__traceback__)


class WaymoV2Writer:
    """Write `FrameRecord`s + range images as a Waymo v2 dataset under `root`.

    ``with WaymoV2Writer(root) as w: w.write(record, {"TOP": RangeImageData(...), ...})``, the same
    arguments as v1's `WaymoWriter`. Frames of one segment (``record.key.segment``) go into that
    segment's files; the calibrations come from the segment's first frame's rig. A segment's files
    are finished on `finish_segment(name)` or `close()`; an exception inside the block discards
    the unfinished ones. Components written: lidar (range images), lidar_pose (the TOP pixel
    pose), lidar_calibration, vehicle_pose, camera_image (JPEG), camera_calibration, lidar_box.
    """

    def __init__(self, root: str | os.PathLike, *, compression: str = "snappy") -> None:
        self.root = Path(root)
        self.compression = compression
        self._open: dict[str, _SegmentFiles] = {}
        self.count = 0

    def write(self, record: FrameRecord, range_images: Mapping[str, RangeImageData]) -> None:
        """Append one frame to its segment's files."""
        where = f"frame {record.key}"
        lidars, cameras = check_frame(record, range_images, where)
        seg = record.key.segment
        files = self._open.get(seg)
        if files is None:
            files = self._open[seg] = _SegmentFiles(self.root, seg, self.compression)
        if not files.calibrated:
            self._calibrations(files, record)
            files.calibrated = True
        key = {S.SEGMENT: seg, S.TIMESTAMP: int(record.key.timestamp_us)}

        def rows(n: int, **columns: list) -> dict[str, list]:
            return {**{k: [v] * n for k, v in key.items()}, **columns}

        names = [n for n in LASER_NAMES if n in range_images]
        lidar: dict[str, list] = {S.LASER: [LASER_IDS[n] for n in names]}
        for ret in (1, 2):
            values, shapes = [], []
            for n in names:
                ri = range_images[n].range_image
                has = ri.shape[0] >= ret
                values.append(ri[ret - 1] if has else None)
                shapes.append(list(ri.shape[1:]) if has else None)
            lidar[S.RANGE_IMAGE[ret][0]], lidar[S.RANGE_IMAGE[ret][1]] = _float_lists(values), shapes
        files.write(S.LIDAR, rows(len(names), **lidar))
        posed = [n for n in names if range_images[n].pixel_pose is not None]
        files.write(
            S.LIDAR_POSE,
            rows(
                len(posed),
                **{
                    S.LASER: [LASER_IDS[n] for n in posed],
                    S.PIXEL_POSE[0]: _float_lists([range_images[n].pixel_pose for n in posed]),
                    S.PIXEL_POSE[1]: [list(range_images[n].pixel_pose.shape) for n in posed],
                },
            ),
        )
        pose = _transform(record.world_from_vehicle)
        files.write(S.VEHICLE_POSE, rows(1, **{S.WORLD_FROM_VEHICLE: [pose]}))
        self._images(files, record, cameras, rows)
        self._boxes(files, record, rows, where)
        files.frames += 1
        self.count += 1

    def _calibrations(self, files: _SegmentFiles, record: FrameRecord) -> None:
        seg = record.key.segment
        lidars = [lid for n in LASER_NAMES for lid in record.rig.lidars if lid.name == n]
        fields = [beam_inclination_fields(lid) for lid in lidars]
        files.write(
            S.LIDAR_CALIBRATION,
            {
                S.SEGMENT: [seg] * len(lidars),
                S.LASER: [LASER_IDS[lid.name] for lid in lidars],
                S.LIDAR_EXTRINSIC: [_transform(lid.vehicle_from_lidar) for lid in lidars],
                S.BEAM_MIN: [f[1] for f in fields],
                S.BEAM_MAX: [f[2] for f in fields],
                S.BEAM_VALUES: [f[0] for f in fields],
            },
        )
        cams = [c for n in CAMERA_NAMES for c in record.rig.cameras if c.name == n]
        from drivetl.calib.camera import ROLLING_SHUTTER_DIRECTIONS

        intrinsics = [[c.fx, c.fy, c.cx, c.cy, c.k1, c.k2, c.p1, c.p2, c.k3] for c in cams]
        files.write(
            S.CAMERA_CALIBRATION,
            {
                S.SEGMENT: [seg] * len(cams),
                S.CAMERA: [CAMERA_IDS[c.name] for c in cams],
                **{col: [float(v[i]) for v in intrinsics] for i, col in enumerate(S.INTRINSIC)},
                S.CAMERA_EXTRINSIC: [_transform(c.vehicle_from_camera) for c in cams],
                S.CAMERA_WIDTH: [int(c.width) for c in cams],
                S.CAMERA_HEIGHT: [int(c.height) for c in cams],
                S.ROLLING_SHUTTER_DIRECTION: [
                    ROLLING_SHUTTER_DIRECTIONS.index(c.rolling_shutter_direction)
                    if c.rolling_shutter_direction in ROLLING_SHUTTER_DIRECTIONS
                    else 0
                    for c in cams
                ],
            },
        )

    def _images(self, files: _SegmentFiles, record: FrameRecord, cameras: dict, rows) -> None:
        names = [n for n in CAMERA_NAMES if n in record.cameras]
        seconds = record.key.timestamp_us * 1e-6
        n = len(names)
        readout = [cameras[c].readout_time_s if c in cameras else 0.0 for c in names]
        columns: dict[str, list] = {
            S.CAMERA: [CAMERA_IDS[c] for c in names],
            S.IMAGE: [jpeg_bytes(record.cameras[c].data, record.cameras[c].encoding) for c in names],
            S.IMAGE_POSE: [_transform(record.world_from_vehicle)] * n,
            **{col: [0.0] * n for col in S.IMAGE_VELOCITY},
            S.IMAGE_POSE_TIMESTAMP: [seconds] * n,
            S.SHUTTER: [0.0] * n,
            S.TRIGGER_TIME: [seconds] * n,
            S.READOUT_DONE_TIME: [seconds + r for r in readout],
        }
        files.write(S.CAMERA_IMAGE, rows(n, **columns))

    def _boxes(self, files: _SegmentFiles, record: FrameRecord, rows, where: str) -> None:
        boxes = record.boxes
        n = len(boxes)
        for i, cls in enumerate(boxes.classes):
            if cls not in TYPE_FROM_CLASS:
                raise DataError(
                    f"{where}: box {i} has class {cls!r}, which Waymo's format cannot hold "
                    f"(use one of {', '.join(TYPE_FROM_CLASS)})"
                )
        geometry = np.asarray(boxes.boxes, dtype=np.float64).reshape(n, 7)
        speed = [
            [float(v) if math.isfinite(float(v)) else None for v in boxes.speed[i]] for i in range(n)
        ]
        columns: dict[str, list] = {
            S.OBJECT_ID: [boxes.ids[i] or f"box{i}" for i in range(n)],
            **{c: geometry[:, k].tolist() for k, c in enumerate((*S.BOX_CENTER, *S.BOX_SIZE, S.BOX_HEADING))},
            S.BOX_TYPE: [TYPE_FROM_CLASS[c] for c in boxes.classes],
            S.BOX_NUM_POINTS: [max(0, int(v)) for v in boxes.num_points],
            S.BOX_NUM_TOP_POINTS: [0] * n,
            S.BOX_SPEED[0]: [s[0] for s in speed],
            S.BOX_SPEED[1]: [s[1] for s in speed],
            S.BOX_SPEED[2]: [0.0] * n,
            **{col: [0.0] * n for col in S.BOX_ACCELERATION},
            S.BOX_DIFFICULTY: [int(v) for v in boxes.difficulty],
            S.BOX_TRACKING_DIFFICULTY: [0] * n,
        }
        files.write(S.LIDAR_BOX, rows(n, **columns))

    def finish_segment(self, segment: str) -> None:
        """Finish `segment`'s files (rename them into place); later frames of it start new files."""
        files = self._open.pop(segment, None)
        if files is not None:
            files.finish()

    def close(self) -> None:
        """Finish every open segment."""
        for seg in list(self._open):
            self.finish_segment(seg)

    def abort(self, exc: BaseException | None = None) -> None:
        """Discard every unfinished segment's files."""
        err = exc or RuntimeError("aborted")
        for seg in list(self._open):
            self._open.pop(seg).abort(err)

    def __enter__(self) -> WaymoV2Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)
