"""Waymo Open Dataset v1 without TensorFlow: read frames, write frames, decode range images.

Public API:

- `WaymoV1Reader(path)` iterates `WaymoFrame` objects: ``frame.points(laser=None, return_index=None)``
  (N, 3) float32 vehicle-frame points in the order of Waymo's own converter, ``frame.point_features()``
  (columns `FEATURE_COLUMNS`), ``frame.images``, ``frame.rig``, ``frame.boxes``, ``frame.key``,
  ``frame.world_from_vehicle`` and ``frame.to_record()``.
- `WaymoRecordIndex(files)`: random access (``len``, ``[i] -> FrameRecord``) by record index.
- `WaymoWriter(path)` writes `FrameRecord` + `RangeImageData` per laser as Waymo v1 Frames.
- `range_image_points` and friends: the vectorized range image -> points math.

The Waymo protobuf modules are imported lazily (on first read or write), never by importing this package.
"""

from drivetl.data.formats.waymo._calib import LaserCalib
from drivetl.data.formats.waymo._frame import WaymoFrame
from drivetl.data.formats.waymo._index import WaymoRecordIndex
from drivetl.data.formats.waymo._names import (
    CAMERA_NAMES,
    CLASS_FROM_TYPE,
    FEATURE_COLUMNS,
    LASER_NAMES,
    RECORD_COLUMNS,
)
from drivetl.data.formats.waymo._range_image import (
    column_azimuths,
    pixel_pose_matrices,
    range_image_points,
    rotation_from_rpy_array,
    uniform_inclinations,
)
from drivetl.data.formats.waymo._reader import WaymoV1Reader, parse_frame
from drivetl.data.formats.waymo._writer import RangeImageData, WaymoWriter, build_frame

__all__ = [
    "CAMERA_NAMES",
    "CLASS_FROM_TYPE",
    "FEATURE_COLUMNS",
    "LASER_NAMES",
    "RECORD_COLUMNS",
    "LaserCalib",
    "RangeImageData",
    "WaymoFrame",
    "WaymoRecordIndex",
    "WaymoV1Reader",
    "WaymoWriter",
    "build_frame",
    "column_azimuths",
    "parse_frame",
    "pixel_pose_matrices",
    "range_image_points",
    "rotation_from_rpy_array",
    "uniform_inclinations",
]
