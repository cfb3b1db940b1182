"""Waymo Open Dataset v1 (TFRecord) and v2 (Parquet) without TensorFlow: read, write, decode range images.

Public API:

- `WaymoV1Reader(path)` iterates `WaymoFrame` objects: ``frame.points(laser=None, return_index=None)``
  (N, 3) float32 vehicle-frame points in the order of Waymo's own converter, ``frame.point_features()``
  (columns `FEATURE_COLUMNS`), ``frame.images``, ``frame.rig``, ``frame.boxes``, ``frame.key``,
  ``frame.world_from_vehicle`` and ``frame.to_record()``.
- `WaymoRecordIndex(files)`: random access (``len``, ``[i] -> FrameRecord``) by record index.
- `WaymoWriter(path)` writes `FrameRecord` + `RangeImageData` per laser as Waymo v1 Frames.
- `WaymoV2Reader(root)` over a v2 dataset folder (``<root>/<component>/<segment>.parquet``): the same
  frame interface (`WaymoV2Frame`), reading only the row groups and columns a frame needs;
  `WaymoV2RecordIndex(root)` gives ``[i] -> FrameRecord``; `WaymoV2Writer(root)` writes v2 folders
  (one row group per frame per component); `is_v2_folder(path)` tells a v2 folder.
- `range_image_points` and friends: the vectorized range image -> points math.

The Waymo protobuf modules and pyarrow are imported lazily (on first read or write), never by importing
this package. Range-image zlib streams go through libdeflate when the `deflate` package is installed,
zlib otherwise (`_zlib`).
"""

from drivetl.data.formats.waymo._calib import LaserCalib
from drivetl.data.formats.waymo._frame import BaseWaymoFrame, WaymoFrame
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
from drivetl.data.formats.waymo._v2_files import is_v2_folder
from drivetl.data.formats.waymo._v2_frame import WaymoV2Frame
from drivetl.data.formats.waymo._v2_reader import WaymoV2Reader, WaymoV2RecordIndex
from drivetl.data.formats.waymo._v2_writer import WaymoV2Writer
from drivetl.data.formats.waymo._writer import RangeImageData, WaymoWriter, build_frame

__all__ = [
    "CAMERA_NAMES",
    "CLASS_FROM_TYPE",
    "FEATURE_COLUMNS",
    "LASER_NAMES",
    "RECORD_COLUMNS",
    "BaseWaymoFrame",
    "LaserCalib",
    "RangeImageData",
    "WaymoFrame",
    "WaymoRecordIndex",
    "WaymoV1Reader",
    "WaymoV2Frame",
    "WaymoV2Reader",
    "WaymoV2RecordIndex",
    "WaymoV2Writer",
    "WaymoWriter",
    "build_frame",
    "is_v2_folder",
    "column_azimuths",
    "parse_frame",
    "pixel_pose_matrices",
    "range_image_points",
    "rotation_from_rpy_array",
    "uniform_inclinations",
]
