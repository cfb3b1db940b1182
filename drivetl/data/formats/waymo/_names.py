"""Waymo v1 enum names and the constants the reader and writer share."""

from __future__ import annotations

#: LaserName enum, in enum order (TOP = 1 ... REAR = 5): the order points are concatenated in.
LASER_NAMES: tuple[str, ...] = ("TOP", "FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR")
LASER_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(LASER_NAMES)}

#: CameraName enum, in enum order (FRONT = 1 ...).
CAMERA_NAMES: tuple[str, ...] = (
    "FRONT",
    "FRONT_LEFT",
    "FRONT_RIGHT",
    "SIDE_LEFT",
    "SIDE_RIGHT",
    "REAR_LEFT",
    "REAR",
    "REAR_RIGHT",
)
CAMERA_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(CAMERA_NAMES)}

#: Label.Type -> canonical class (TYPE_UNKNOWN boxes are dropped by the reader).
CLASS_FROM_TYPE: dict[int, str] = {1: "vehicle", 2: "pedestrian", 3: "sign", 4: "cyclist"}
TYPE_FROM_CLASS: dict[str, int] = {v: k for k, v in CLASS_FROM_TYPE.items()}
TYPE_NAMES: dict[int, str] = {
    0: "TYPE_UNKNOWN",
    1: "TYPE_VEHICLE",
    2: "TYPE_PEDESTRIAN",
    3: "TYPE_SIGN",
    4: "TYPE_CYCLIST",
}

#: Range image shape and maximum range of Waymo's own lasers, used when a frame has no range image.
DEFAULT_LASER_SHAPE: dict[str, tuple[int, int]] = {
    "TOP": (64, 2650),
    "FRONT": (200, 600),
    "SIDE_LEFT": (200, 600),
    "SIDE_RIGHT": (200, 600),
    "REAR": (200, 600),
}
DEFAULT_MAX_RANGE: dict[str, float] = {
    "TOP": 75.0,
    "FRONT": 20.0,
    "SIDE_LEFT": 20.0,
    "SIDE_RIGHT": 20.0,
    "REAR": 20.0,
}

#: Columns of `WaymoFrame.point_features`, in order.
FEATURE_COLUMNS: tuple[str, ...] = (
    "x",
    "y",
    "z",
    "intensity",
    "elongation",
    "range",
    "no_label_zone",
    "return_index",
    "laser_id",
)
#: Columns of the LiDAR points in `WaymoFrame.to_record` (a subset of drivetl's POINT_COLUMNS).
RECORD_COLUMNS: tuple[str, ...] = ("x", "y", "z", "intensity", "elongation", "return_index", "laser_id")


def laser_name(laser_id: int, where: str) -> str:
    from drivetl.errors import DataError

    if not 1 <= laser_id <= len(LASER_NAMES):
        raise DataError(f"{where}: unknown laser name id {laser_id} (Waymo v1 has 1..5)")
    return LASER_NAMES[laser_id - 1]


def camera_name(camera_id: int, where: str) -> str:
    from drivetl.errors import DataError

    if not 1 <= camera_id <= len(CAMERA_NAMES):
        raise DataError(f"{where}: unknown camera name id {camera_id} (Waymo v1 has 1..8)")
    return CAMERA_NAMES[camera_id - 1]
