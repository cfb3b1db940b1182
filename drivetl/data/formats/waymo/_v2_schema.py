"""Waymo Open Dataset v2 (Parquet) components: folder names, column names and their types.

A v2 dataset folder holds one folder per component, and in it one Parquet file per segment
(``<root>/<component>/<segment context name>.parquet``). Column names follow the official v2
package (``waymo_open_dataset/v2``, whose dataclass fields flatten to ``key.<field>`` for keys and
``[<ComponentClass>].<field>.<subfield>`` for values); they are written out here because that
package imports TensorFlow. Only the components and columns drivetl reads or writes are listed.

Each column has a kind that the reader checks before it reads values (`type_matches`): the
official schema stores transforms as double, but files written by other tools (the real
``vehicle_pose`` sample among them) hold float32, so any floating type passes where a float is
expected, any integer width where an integer is, and a list of the right element kind (fixed-size
or not; lengths are checked per value) where a list is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------------- components (folder names)
LIDAR = "lidar"
LIDAR_POSE = "lidar_pose"
LIDAR_CALIBRATION = "lidar_calibration"
VEHICLE_POSE = "vehicle_pose"
CAMERA_IMAGE = "camera_image"
CAMERA_CALIBRATION = "camera_calibration"
LIDAR_BOX = "lidar_box"

#: The components a frame cannot be read without.
REQUIRED: tuple[str, ...] = (LIDAR, LIDAR_CALIBRATION, VEHICLE_POSE)
#: Components keyed by segment only (calibrations); the others are keyed by segment and frame.
SEGMENT_LEVEL: tuple[str, ...] = (LIDAR_CALIBRATION, CAMERA_CALIBRATION)
#: Per-frame components in which every frame of the segment must have rows (when the component is
#: in the dataset at all); a frame without labels simply has no `lidar_box` rows.
EVERY_FRAME: tuple[str, ...] = (LIDAR, VEHICLE_POSE, CAMERA_IMAGE)
ALL: tuple[str, ...] = (
    LIDAR,
    LIDAR_POSE,
    LIDAR_CALIBRATION,
    VEHICLE_POSE,
    CAMERA_IMAGE,
    CAMERA_CALIBRATION,
    LIDAR_BOX,
)

# ---------------------------------------------------------------------- key columns
SEGMENT = "key.segment_context_name"
TIMESTAMP = "key.frame_timestamp_micros"
LASER = "key.laser_name"
CAMERA = "key.camera_name"
OBJECT_ID = "key.laser_object_id"


def _c(cls: str, field: str) -> str:
    return f"[{cls}].{field}"


# ---------------------------------------------------------------------- value columns
# lidar: LiDARComponent, one row per (frame, laser); range images as flat float32 values + shape.
RANGE_IMAGE = {
    ret: (
        _c("LiDARComponent", f"range_image_return{ret}.values"),
        _c("LiDARComponent", f"range_image_return{ret}.shape"),
    )
    for ret in (1, 2)
}
# lidar_pose: LiDARPoseComponent, the TOP laser's per-pixel pose (first return only).
PIXEL_POSE = (
    _c("LiDARPoseComponent", "range_image_return1.values"),
    _c("LiDARPoseComponent", "range_image_return1.shape"),
)
# lidar_calibration: LiDARCalibrationComponent, one row per (segment, laser).
LIDAR_EXTRINSIC = _c("LiDARCalibrationComponent", "extrinsic.transform")
BEAM_MIN = _c("LiDARCalibrationComponent", "beam_inclination.min")
BEAM_MAX = _c("LiDARCalibrationComponent", "beam_inclination.max")
BEAM_VALUES = _c("LiDARCalibrationComponent", "beam_inclination.values")
# vehicle_pose: VehiclePoseComponent, one row per frame.
WORLD_FROM_VEHICLE = _c("VehiclePoseComponent", "world_from_vehicle.transform")
# camera_image: CameraImageComponent, one row per (frame, camera).
IMAGE = _c("CameraImageComponent", "image")
IMAGE_POSE = _c("CameraImageComponent", "pose.transform")
IMAGE_VELOCITY = tuple(
    _c("CameraImageComponent", f"velocity.{kind}_velocity.{axis}")
    for kind in ("linear", "angular")
    for axis in "xyz"
)
IMAGE_POSE_TIMESTAMP = _c("CameraImageComponent", "pose_timestamp")
SHUTTER = _c("CameraImageComponent", "rolling_shutter_params.shutter")
TRIGGER_TIME = _c("CameraImageComponent", "rolling_shutter_params.camera_trigger_time")
READOUT_DONE_TIME = _c("CameraImageComponent", "rolling_shutter_params.camera_readout_done_time")
# camera_calibration: CameraCalibrationComponent, one row per (segment, camera).
INTRINSIC = tuple(
    _c("CameraCalibrationComponent", f"intrinsic.{k}")
    for k in ("f_u", "f_v", "c_u", "c_v", "k1", "k2", "p1", "p2", "k3")
)
CAMERA_EXTRINSIC = _c("CameraCalibrationComponent", "extrinsic.transform")
CAMERA_WIDTH = _c("CameraCalibrationComponent", "width")
CAMERA_HEIGHT = _c("CameraCalibrationComponent", "height")
ROLLING_SHUTTER_DIRECTION = _c("CameraCalibrationComponent", "rolling_shutter_direction")
# lidar_box: LiDARBoxComponent, one row per (frame, object).
BOX_CENTER = tuple(_c("LiDARBoxComponent", f"box.center.{a}") for a in "xyz")
BOX_SIZE = tuple(_c("LiDARBoxComponent", f"box.size.{a}") for a in "xyz")  # length, width, height
BOX_HEADING = _c("LiDARBoxComponent", "box.heading")
BOX_TYPE = _c("LiDARBoxComponent", "type")
BOX_NUM_POINTS = _c("LiDARBoxComponent", "num_lidar_points_in_box")
BOX_NUM_TOP_POINTS = _c("LiDARBoxComponent", "num_top_lidar_points_in_box")
BOX_SPEED = tuple(_c("LiDARBoxComponent", f"speed.{a}") for a in "xyz")
BOX_ACCELERATION = tuple(_c("LiDARBoxComponent", f"acceleration.{a}") for a in "xyz")
BOX_DIFFICULTY = _c("LiDARBoxComponent", "difficulty_level.detection")
BOX_TRACKING_DIFFICULTY = _c("LiDARBoxComponent", "difficulty_level.tracking")


@dataclass(frozen=True)
class Column:
    """A column's name, the kind of values it holds (``string``, ``binary``, ``int``, ``float``,
    ``int_list``, ``float_list``) and, for a list, its length when fixed (None: any)."""

    name: str
    kind: str
    size: int | None = None

    def describe(self) -> str:
        """The expected type in words, for error messages."""
        words = {
            "string": "a string",
            "binary": "binary",
            "int": "an integer",
            "float": "a float",
            "int_list": "a list of integers",
            "float_list": "a list of floats",
        }[self.kind]
        return f"{words} ({self.size} values)" if self.size else words


def _keys(*extra: str) -> list[Column]:
    kinds = {SEGMENT: "string", TIMESTAMP: "int", LASER: "int", CAMERA: "int", OBJECT_ID: "string"}
    return [Column(SEGMENT, "string"), *(Column(k, kinds[k]) for k in extra)]


#: component -> {column name: Column}, for every column the reader may read.
COLUMNS: dict[str, dict[str, Column]] = {
    comp: {c.name: c for c in cols}
    for comp, cols in {
        LIDAR: _keys(TIMESTAMP, LASER)
        + [Column(RANGE_IMAGE[r][0], "float_list") for r in (1, 2)]
        + [Column(RANGE_IMAGE[r][1], "int_list", 3) for r in (1, 2)],
        LIDAR_POSE: _keys(TIMESTAMP, LASER)
        + [Column(PIXEL_POSE[0], "float_list"), Column(PIXEL_POSE[1], "int_list", 3)],
        LIDAR_CALIBRATION: _keys(LASER)
        + [
            Column(LIDAR_EXTRINSIC, "float_list", 16),
            Column(BEAM_MIN, "float"),
            Column(BEAM_MAX, "float"),
            Column(BEAM_VALUES, "float_list"),
        ],
        VEHICLE_POSE: _keys(TIMESTAMP) + [Column(WORLD_FROM_VEHICLE, "float_list", 16)],
        CAMERA_IMAGE: _keys(TIMESTAMP, CAMERA)
        + [
            Column(IMAGE, "binary"),
            Column(IMAGE_POSE, "float_list", 16),
            Column(IMAGE_POSE_TIMESTAMP, "float"),
            Column(SHUTTER, "float"),
            Column(TRIGGER_TIME, "float"),
            Column(READOUT_DONE_TIME, "float"),
        ],
        CAMERA_CALIBRATION: _keys(CAMERA)
        + [Column(c, "float") for c in INTRINSIC]
        + [
            Column(CAMERA_EXTRINSIC, "float_list", 16),
            Column(CAMERA_WIDTH, "int"),
            Column(CAMERA_HEIGHT, "int"),
            Column(ROLLING_SHUTTER_DIRECTION, "int"),
        ],
        LIDAR_BOX: _keys(TIMESTAMP, OBJECT_ID)
        + [Column(c, "float") for c in (*BOX_CENTER, *BOX_SIZE, BOX_HEADING, *BOX_SPEED[:2])]
        + [Column(BOX_TYPE, "int"), Column(BOX_NUM_POINTS, "int"), Column(BOX_DIFFICULTY, "int")],
    }.items()
}


def type_matches(arrow_type: Any, column: Column) -> bool:
    """True when a pyarrow type can hold `column`'s kind of values (see the module docstring)."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    kind = column.kind
    if kind == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if kind == "binary":
        return pa.types.is_binary(t) or pa.types.is_large_binary(t)
    if kind == "int":
        return pa.types.is_integer(t)
    if kind == "float":
        return pa.types.is_floating(t)
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return False
    if pa.types.is_fixed_size_list(t) and column.size is not None and t.list_size != column.size:
        return False
    item = t.value_type
    return pa.types.is_integer(item) if kind == "int_list" else pa.types.is_floating(item)


def arrow_schema(component: str):  # -> pyarrow.Schema
    """The official v2 schema of `component` (what `WaymoV2Writer` writes), as a pyarrow schema."""
    import pyarrow as pa

    f64, transform = pa.float64(), pa.list_(pa.float64(), 16)
    image = [pa.list_(pa.float32()), pa.list_(pa.int32(), 3)]
    key_types = {
        SEGMENT: pa.string(),
        TIMESTAMP: pa.int64(),
        LASER: pa.int8(),
        CAMERA: pa.int8(),
        OBJECT_ID: pa.string(),
    }

    def keys(*names: str) -> list[tuple[str, Any]]:
        return [(n, key_types[n]) for n in (SEGMENT, *names)]

    fields: dict[str, list[tuple[str, Any]]] = {
        LIDAR: keys(TIMESTAMP, LASER)
        + [(RANGE_IMAGE[r][i], image[i]) for r in (1, 2) for i in (0, 1)],
        LIDAR_POSE: keys(TIMESTAMP, LASER) + [(PIXEL_POSE[i], image[i]) for i in (0, 1)],
        LIDAR_CALIBRATION: keys(LASER)
        + [
            (LIDAR_EXTRINSIC, transform),
            (BEAM_MIN, f64),
            (BEAM_MAX, f64),
            (BEAM_VALUES, pa.list_(f64)),
        ],
        VEHICLE_POSE: keys(TIMESTAMP) + [(WORLD_FROM_VEHICLE, transform)],
        CAMERA_IMAGE: keys(TIMESTAMP, CAMERA)
        + [(IMAGE, pa.binary()), (IMAGE_POSE, transform)]
        + [(c, pa.float32() if "linear" in c else f64) for c in IMAGE_VELOCITY]
        + [(c, f64) for c in (IMAGE_POSE_TIMESTAMP, SHUTTER, TRIGGER_TIME, READOUT_DONE_TIME)],
        CAMERA_CALIBRATION: keys(CAMERA)
        + [(c, f64) for c in INTRINSIC]
        + [
            (CAMERA_EXTRINSIC, transform),
            (CAMERA_WIDTH, pa.int32()),
            (CAMERA_HEIGHT, pa.int32()),
            (ROLLING_SHUTTER_DIRECTION, pa.int8()),
        ],
        LIDAR_BOX: keys(TIMESTAMP, OBJECT_ID)
        + [(c, f64) for c in (*BOX_CENTER, *BOX_SIZE, BOX_HEADING)]
        + [(BOX_TYPE, pa.int8()), (BOX_NUM_POINTS, pa.int64()), (BOX_NUM_TOP_POINTS, pa.int64())]
        + [(c, f64) for c in (*BOX_SPEED, *BOX_ACCELERATION)]
        + [(BOX_DIFFICULTY, pa.int8()), (BOX_TRACKING_DIFFICULTY, pa.int8())],
    }
    return pa.schema(fields[component])
