"""`WaymoV2Frame`: one frame of a Waymo v2 (Parquet) segment, read lazily, column by column.

Each attribute reads what it needs and no more: `points` the frame's rows of lidar (range images),
lidar_pose (the TOP pixel pose) and vehicle_pose, plus the segment's lidar_calibration (read once
per segment); `images` the camera_image rows; `cameras()` camera_calibration and the image timing
columns (not the images); `boxes` lidar_box. Range images decode exactly as v1's do (the same
`decode_jobs`), so the points of a frame written in both releases are the same.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from drivetl.data.formats.waymo import _v2_schema as S
from drivetl.data.formats.waymo._calib import LaserCalib, make_camera_model, transform_from_proto
from drivetl.data.formats.waymo._decode import DecodedLaser, LaserJob, decode_jobs
from drivetl.data.formats.waymo._frame import BaseWaymoFrame
from drivetl.data.formats.waymo._labels import wrap_angle
from drivetl.data.formats.waymo._names import CAMERA_NAMES, CLASS_FROM_TYPE, camera_name, laser_name
from drivetl.data.formats.waymo._v2_files import ComponentFile, Segment
from drivetl.data.records import Boxes, CameraImage, FrameKey
from drivetl.errors import DataError

if TYPE_CHECKING:
    from drivetl.calib import CameraModel


def _transform(table: Any, column: str, row: int, where: str) -> np.ndarray:
    value = table.column(column)[row]
    if not value.is_valid:
        raise DataError(f"{where}: {column} is empty")
    return transform_from_proto(value.as_py(), f"{where}: {column}")


def _floats(table: Any, column: str) -> np.ndarray:
    """(rows,) float64, NaN where null."""
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)


def _ints(table: Any, column: str, default: int = 0) -> np.ndarray:
    """(rows,) int64, `default` where null."""
    return np.asarray(table.column(column).fill_null(default).to_numpy(zero_copy_only=False), dtype=np.int64)


def matrix(table: Any, row: int, columns: tuple[str, str], where: str) -> np.ndarray | None:
    """The (H, W, C) float32 array of one range-image-like cell (flat values + shape), or None when
    the cell is null (no second return). The values are viewed without a copy when they are float32."""
    values_col, shape_col = columns
    values = table.column(values_col)[row]
    if not values.is_valid:
        return None
    shape = table.column(shape_col)[row]
    dims = [int(d) for d in shape.as_py()] if shape.is_valid else []
    flat = values.values.to_numpy(zero_copy_only=False)
    if len(dims) != 3 or min(dims) <= 0 or int(np.prod(dims)) != flat.size:
        raise DataError(
            f"{where}: {values_col} has {flat.size} values but its shape is {dims or 'missing'} "
            "(expected H x W x C matching the values); the row is damaged"
        )
    return np.asarray(flat, dtype=np.float32).reshape(dims)


def _source(array: np.ndarray):
    """A decoding job's array source for an array already in memory."""
    return lambda: array


def lidar_calibrations(segment: Segment) -> dict[str, LaserCalib]:
    """Laser name -> `LaserCalib` from the segment's lidar_calibration file (read once per segment)."""
    cached = segment.cache.get("lasers")
    if cached is not None:
        return cached
    cf = segment.files[S.LIDAR_CALIBRATION]
    table = cf.read_all([S.LASER, S.LIDAR_EXTRINSIC, S.BEAM_MIN, S.BEAM_MAX, S.BEAM_VALUES])
    out: dict[str, LaserCalib] = {}
    lo, hi = _floats(table, S.BEAM_MIN), _floats(table, S.BEAM_MAX)
    for row, laser_id in enumerate(_ints(table, S.LASER)):
        where = cf.label()
        name = laser_name(int(laser_id), where)
        beams = table.column(S.BEAM_VALUES)[row]
        out[name] = LaserCalib(
            name=name,
            laser_id=int(laser_id),
            vehicle_from_lidar=_transform(table, S.LIDAR_EXTRINSIC, row, f"{where}: laser {name}"),
            beam_inclinations=np.asarray(beams.as_py() if beams.is_valid else [], dtype=np.float64),
            inclination_min=float(lo[row]),
            inclination_max=float(hi[row]),
        )
    segment.cache["lasers"] = out
    return out


def camera_calibrations(segment: Segment) -> dict[str, dict]:
    """Camera name -> its calibration values, from the segment's camera_calibration file (if any)."""
    cached = segment.cache.get("cameras")
    if cached is not None:
        return cached
    out: dict[str, dict] = {}
    if segment.has(S.CAMERA_CALIBRATION):
        cf = segment.files[S.CAMERA_CALIBRATION]
        cols = [S.CAMERA, *S.INTRINSIC, S.CAMERA_EXTRINSIC, S.CAMERA_WIDTH, S.CAMERA_HEIGHT]
        table = cf.read_all([*cols, S.ROLLING_SHUTTER_DIRECTION])
        intrinsic = np.stack([_floats(table, c) for c in S.INTRINSIC], axis=1)
        width, height = _ints(table, S.CAMERA_WIDTH), _ints(table, S.CAMERA_HEIGHT)
        direction = _ints(table, S.ROLLING_SHUTTER_DIRECTION)
        for row, cam_id in enumerate(_ints(table, S.CAMERA)):
            name = camera_name(int(cam_id), cf.label())
            where = f"{cf.label()}: camera {name}"
            out[name] = {
                "intrinsic": np.nan_to_num(intrinsic[row]).tolist(),
                "vehicle_from_camera": _transform(table, S.CAMERA_EXTRINSIC, row, where),
                "width": int(width[row]),
                "height": int(height[row]),
                "direction": int(direction[row]),
            }
    segment.cache["cameras"] = out
    return out


class WaymoV2Frame(BaseWaymoFrame):
    """One frame of a Waymo v2 segment, with the interface of v1's `WaymoFrame`.

    Points are decoded on first use (all lasers and both returns, in parallel threads when
    `threads` > 1) and cached; see `BaseWaymoFrame` for their frame, units and order.
    """

    def __init__(self, segment: Segment, timestamp: int, *, threads: int = 1) -> None:
        self.segment = segment
        self.timestamp = int(timestamp)
        self.threads = threads
        self.where = f"{segment.root}: segment {segment.name}, frame {self.timestamp}"
        self.laser_calibrations = lidar_calibrations(segment)
        self._decoded: dict[tuple[str, int], DecodedLaser] | None = None

    @property
    def key(self) -> FrameKey:
        """Segment (context name) and timestamp in microseconds."""
        return self.segment.key(self.timestamp)

    def _file(self, component: str) -> ComponentFile:
        return self.segment.files[component]

    def _rows(self, component: str, columns: list[str]):
        """This frame's rows of `component` (empty when the dataset lacks the component)."""
        if not self.segment.has(component):
            return None
        return self._file(component).read_frame(
            self.timestamp, columns, required=self.segment.every_frame(component)
        )

    @functools.cached_property
    def world_from_vehicle(self) -> np.ndarray:
        """(4, 4) float64 frame pose (vehicle_pose)."""
        cf = self._file(S.VEHICLE_POSE)
        table = self._rows(S.VEHICLE_POSE, [S.WORLD_FROM_VEHICLE])
        if table.num_rows != 1:
            raise DataError(
                f"{cf.label(self.timestamp)}: {table.num_rows} rows for this frame, expected one; "
                "the file is damaged (re-copy it)"
            )
        return _transform(table, S.WORLD_FROM_VEHICLE, 0, cf.label(self.timestamp))

    def _decode(self) -> dict[tuple[str, int], DecodedLaser]:
        if self._decoded is not None:
            return self._decoded
        cf = self._file(S.LIDAR)
        label = cf.label(self.timestamp)
        columns = [S.LASER, *S.RANGE_IMAGE[1], *S.RANGE_IMAGE[2]]
        table = self._rows(S.LIDAR, columns)
        jobs: list[LaserJob] = []
        seen: set[str] = set()
        for row, laser_id in enumerate(_ints(table, S.LASER)):
            name = laser_name(int(laser_id), label)
            if name in seen:
                raise DataError(f"{label}: laser {name} has two rows; the file is damaged (re-copy it)")
            seen.add(name)
            calib = self.laser_calibrations.get(name)
            for ret in (1, 2):
                where = f"{label}: laser {name} return {ret}"
                array = matrix(table, row, S.RANGE_IMAGE[ret], where)
                if array is None:
                    continue
                if calib is None:
                    raise DataError(
                        f"{label}: laser {name} has range images but the segment's lidar_calibration has "
                        f"no row for it (it has {sorted(self.laser_calibrations) or 'none'}); copy the "
                        "complete lidar_calibration file"
                    )
                jobs.append(LaserJob(name, ret, _source(array), calib, array.size, where))
        top_pose = None
        if "TOP" in seen and self.segment.has(S.LIDAR_POSE):
            pose_file = self._file(S.LIDAR_POSE)
            poses = self._rows(S.LIDAR_POSE, [S.LASER, *S.PIXEL_POSE])
            for row, laser_id in enumerate(_ints(poses, S.LASER)):
                if int(laser_id) == 1:
                    pose = matrix(poses, row, S.PIXEL_POSE, f"{pose_file.label(self.timestamp)}: laser TOP")
                    if pose is not None:
                        top_pose = _source(pose)
        self._decoded = decode_jobs(jobs, top_pose, self.world_from_vehicle, label, self.threads)
        return self._decoded

    # ------------------------------------------------------------------ cameras and labels
    @functools.cached_property
    def _image_rows(self):
        columns = [S.CAMERA, S.IMAGE, S.IMAGE_POSE]
        return self._rows(S.CAMERA_IMAGE, columns)

    @functools.cached_property
    def images(self) -> Mapping[str, CameraImage]:
        """Camera name -> `CameraImage` (JPEG bytes, decoded lazily), in CameraName order."""
        table = self._image_rows
        if table is None:
            return {}
        label = self._file(S.CAMERA_IMAGE).label(self.timestamp)
        out = {}
        for row, cam_id in sorted(enumerate(_ints(table, S.CAMERA)), key=lambda r: r[1]):
            name = camera_name(int(cam_id), label)
            data = table.column(S.IMAGE)[row]
            out[name] = CameraImage(name, data.as_py() if data.is_valid else b"", "jpeg")
        return out

    @functools.cached_property
    def image_poses(self) -> Mapping[str, np.ndarray]:
        """Camera name -> (4, 4) float64 world_from_vehicle when the image was taken (else the frame pose)."""
        table = self._image_rows
        if table is None:
            return {}
        label = self._file(S.CAMERA_IMAGE).label(self.timestamp)
        out = {}
        for row, cam_id in enumerate(_ints(table, S.CAMERA)):
            name = camera_name(int(cam_id), label)
            valid = table.column(S.IMAGE_POSE)[row].is_valid
            out[name] = _transform(table, S.IMAGE_POSE, row, label) if valid else self.world_from_vehicle
        return out

    def cameras(self) -> tuple[CameraModel, ...]:
        """Camera models from the segment's calibrations (readout time from this frame's image
        timing), in CameraName order."""
        cals = camera_calibrations(self.segment)
        readout: dict[str, float] = {}
        timing = self._rows(S.CAMERA_IMAGE, [S.CAMERA, S.SHUTTER, S.TRIGGER_TIME, S.READOUT_DONE_TIME])
        if timing is not None and cals:
            label = self._file(S.CAMERA_IMAGE).label(self.timestamp)
            shutter, trigger = _floats(timing, S.SHUTTER), _floats(timing, S.TRIGGER_TIME)
            done = _floats(timing, S.READOUT_DONE_TIME)
            for row, cam_id in enumerate(_ints(timing, S.CAMERA)):
                if done[row] > 0:
                    readout[camera_name(int(cam_id), label)] = float(done[row] - trigger[row] - shutter[row])
        return tuple(
            make_camera_model(
                name,
                c["intrinsic"],
                c["vehicle_from_camera"],
                c["width"],
                c["height"],
                c["direction"],
                readout.get(name, 0.0),
            )
            for name in CAMERA_NAMES
            if (c := cals.get(name)) is not None
        )

    @functools.cached_property
    def boxes(self) -> Boxes:
        """lidar_box rows as `Boxes` in the vehicle frame (TYPE_UNKNOWN boxes dropped)."""
        columns = [S.OBJECT_ID, *S.BOX_CENTER, *S.BOX_SIZE, S.BOX_HEADING, *S.BOX_SPEED[:2]]
        table = self._rows(S.LIDAR_BOX, [*columns, S.BOX_TYPE, S.BOX_NUM_POINTS, S.BOX_DIFFICULTY])
        if table is None or table.num_rows == 0:
            return Boxes.empty()
        types = _ints(table, S.BOX_TYPE)
        keep = np.flatnonzero([int(t) in CLASS_FROM_TYPE for t in types])
        if keep.size == 0:
            return Boxes.empty()
        geometry = np.stack([_floats(table, c) for c in (*S.BOX_CENTER, *S.BOX_SIZE, S.BOX_HEADING)], axis=1)
        geometry[:, 6] = [wrap_angle(float(h)) for h in geometry[:, 6]]
        ids = table.column(S.OBJECT_ID).to_pylist()
        speed = np.stack([_floats(table, c) for c in S.BOX_SPEED[:2]], axis=1)
        return Boxes(
            geometry[keep],
            tuple(CLASS_FROM_TYPE[int(types[i])] for i in keep),
            tuple(str(ids[i] or "") for i in keep),
            _ints(table, S.BOX_NUM_POINTS)[keep].astype(np.int32),
            _ints(table, S.BOX_DIFFICULTY)[keep].astype(np.int8),
            speed[keep].astype(np.float32),
        )

    def __repr__(self) -> str:
        return f"WaymoV2Frame({self.key})"
