"""`sensor_msgs/PointCloud2` in any field layout -> drivetl point columns, and back.

A PointCloud2 is `height` rows of `width` points; each point is `point_step` bytes, each row
`row_step` bytes (a row may end in padding). Every `PointField` names a value at a byte `offset`
inside the point, of one of eight datatypes (INT8=1, UINT8=2, INT16=3, UINT16=4, INT32=5, UINT32=6,
FLOAT32=7, FLOAT64=8), `count` times; `is_bigendian` gives the byte order of all of them. Bytes not
covered by a field are padding.

Drivers name the same quantity differently, so fields are mapped onto drivetl's columns:

| drivetl column | field names | unit after decoding |
|---|---|---|
| x, y, z | x, y, z | metres, in the message's `frame_id` |
| intensity | the first of intensity, i, reflectance, reflectivity, signal | raw, as recorded |
| laser_id | ring, laser_id, channel, line (Livox) | beam index |
| time | time, t, timestamp, offset_time, time_offset | seconds after the message's header stamp |
| return_index | return_index, return_type | as recorded |

Time fields: `t` and `offset_time` are integer nanoseconds (Ouster, Livox); `time` and `time_offset`
are float seconds after the stamp (Velodyne); `timestamp` is absolute: float seconds (Hesai) or
nanoseconds (Livox, values above 1e14), made relative by subtracting the stamp. Any other numeric
field with count 1 is kept under its own lower-cased name, with `_raw` appended when point files
read that name as one of the columns above (an Ouster `reflectivity` beside its `intensity` becomes
`reflectivity_raw`); fields with count > 1 are reported as dropped. Points whose x, y or z is not
finite (the holes of an organized cloud) or that sit exactly at the origin (no return) are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivetl.errors import DataError

#: PointField datatype code -> (numpy kind, bytes).
DATATYPES: dict[int, tuple[str, int]] = {
    1: ("i1", 1),
    2: ("u1", 1),
    3: ("i2", 2),
    4: ("u2", 2),
    5: ("i4", 4),
    6: ("u4", 4),
    7: ("f4", 4),
    8: ("f8", 8),
}
#: numpy dtype string (no byte order) -> PointField datatype code.
DATATYPE_CODES: dict[str, int] = {kind: code for code, (kind, _) in DATATYPES.items()}

_INTENSITY = ("intensity", "i", "reflectance", "reflectivity", "signal")
_LASER_ID = ("ring", "laser_id", "channel", "line")
_RETURN = ("return_index", "return_type")
_TIME_NS = ("t", "offset_time")
_TIME_S = ("time", "time_offset")
_TIME_ABS_S = ("timestamp",)
_MAX_POINTS = 50_000_000
#: Names that point files read as another column (drivetl.data.formats.pointfile's aliases).
_POINTFILE_ALIASES = frozenset({"reflectance", "reflectivity", "i", "ring", "t", "timestamp"})
_NAME_OK = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class DecodedCloud:
    """A decoded cloud: (N, C) float32 `points` named by `columns` (x, y, z, intensity first).

    dropped_points: points removed (non-finite or at the origin); dropped_fields: fields not kept
    (name and why); renamed: source field -> drivetl column for the fields that were mapped.
    """

    points: np.ndarray
    columns: tuple[str, ...]
    dropped_points: int = 0
    dropped_fields: tuple[str, ...] = ()
    renamed: Mapping[str, str] = field(default_factory=dict)


def structured_dtype(fields: Sequence[Any], point_step: int, big_endian: bool, where: str) -> np.dtype:
    """The numpy structured dtype of one point: each field at its offset, `point_step` bytes in all.

    fields: PointField-like objects with name, offset, datatype, count. Raises DataError naming `where`
    for an unknown datatype, a field that runs past `point_step` or two fields of the same name.
    """
    order = ">" if big_endian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        name, offset, datatype, count = (getattr(f, k) for k in ("name", "offset", "datatype", "count"))
        if datatype not in DATATYPES:
            raise DataError(
                f"{where}: field {name!r} has datatype {datatype}, not one of PointField's 1..8; "
                "the publisher wrote an invalid PointCloud2"
            )
        kind, size = DATATYPES[datatype]
        count = max(int(count), 1)
        if offset < 0 or offset + size * count > point_step:
            raise DataError(
                f"{where}: field {name!r} (offset {offset}, {count} x {size} bytes) runs past "
                f"point_step {point_step}; the message's field table is inconsistent"
            )
        if name in names:
            raise DataError(f"{where}: field {name!r} appears twice in the field table")
        names.append(name)
        formats.append((order + kind, (count,)) if count > 1 else order + kind)
        offsets.append(int(offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})


def point_array(msg: Any, where: str) -> np.ndarray:
    """The (height * width,) structured array of a PointCloud2 message's points (row padding removed)."""
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    n = height * width
    if n > _MAX_POINTS:
        raise DataError(f"{where}: {height} x {width} points is more than {_MAX_POINTS:,}; not a LiDAR sweep")
    if point_step <= 0 or (n and row_step < width * point_step):
        raise DataError(
            f"{where}: row_step {row_step} is smaller than width {width} x point_step {point_step}"
        )
    dtype = structured_dtype(msg.fields, point_step, bool(msg.is_bigendian), where)
    data = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if data.size < height * row_step:
        raise DataError(
            f"{where}: data holds {data.size} bytes, height {height} x row_step {row_step} needs "
            f"{height * row_step}; the message is truncated"
        )
    if n == 0:
        return np.zeros(0, dtype=dtype)
    rows = data[: height * row_step].reshape(height, row_step)[:, : width * point_step]
    return np.ascontiguousarray(rows).view(dtype).reshape(-1)


def _first(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {n.lower(): n for n in names}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def decode_pointcloud2(
    msg: Any,
    where: str = "PointCloud2",
    *,
    stamp_s: float | None = None,
    field_map: Mapping[str, str] | None = None,
) -> DecodedCloud:
    """Decode a PointCloud2 message into drivetl columns (see the module docstring for the mapping).

    msg: a deserialized sensor_msgs/PointCloud2 (any object with its attributes). where: names the
    file, topic and message in errors. stamp_s: the header stamp in seconds, for absolute time fields.
    field_map: drivetl column -> source field name, overriding the defaults (e.g. intensity: amplitude).
    Returns points in the message's frame, float32; a cloud without an intensity field gets zeros and
    says so in `dropped_fields`.
    """
    arr = point_array(msg, where)
    names = list(arr.dtype.names or ())
    field_map = dict(field_map or {})
    for col, src in field_map.items():
        if src not in names:
            raise DataError(f"{where}: field {src!r} (given for {col}) is not in the cloud's fields {names}")
    pick = {
        "x": field_map.get("x", _first(names, ("x",))),
        "y": field_map.get("y", _first(names, ("y",))),
        "z": field_map.get("z", _first(names, ("z",))),
    }
    missing = [c for c, v in pick.items() if v is None]
    if missing:
        raise DataError(
            f"{where}: the cloud has no {'/'.join(missing)} field (fields: {names}); "
            "it is not a 3D point cloud"
        )
    notes: list[str] = []
    intensity = field_map.get("intensity", _first(names, _INTENSITY))
    laser = field_map.get("laser_id", _first(names, _LASER_ID))
    ret = field_map.get("return_index", _first(names, _RETURN))
    time_field = field_map.get("time", _first(names, (*_TIME_NS, *_TIME_S, *_TIME_ABS_S)))

    xyz = np.stack([arr[pick[c]].astype(np.float64) for c in ("x", "y", "z")], axis=1)
    keep = np.isfinite(xyz).all(axis=1) & (xyz != 0).any(axis=1)
    cols: dict[str, np.ndarray] = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    renamed: dict[str, str] = {}
    if intensity is not None:
        cols["intensity"] = arr[intensity].astype(np.float64)
        renamed[intensity] = "intensity"
    else:
        cols["intensity"] = np.zeros(len(arr))
        notes.append("intensity (no such field: zeros written)")
    if time_field is not None:
        cols["time"] = _time_seconds(arr[time_field], time_field, stamp_s)
        renamed[time_field] = "time"
    if ret is not None:
        cols["return_index"] = arr[ret].astype(np.float64)
        renamed[ret] = "return_index"
    if laser is not None:
        cols["laser_id"] = arr[laser].astype(np.float64)
        renamed[laser] = "laser_id"
    used = {*pick.values(), *renamed}
    for name in names:
        if name in used:
            continue
        sub = arr.dtype.fields[name][0]
        if sub.shape:
            notes.append(f"{name} (count {sub.shape[0]} > 1)")
            continue
        col = _NAME_OK.sub("_", name.lower()).strip("_") or "field"
        if col in _POINTFILE_ALIASES:
            col += "_raw"
        if col in cols:
            notes.append(f"{name} (clashes with column {col})")
            continue
        cols[col] = arr[name].astype(np.float64)
    columns = tuple(cols)
    points = np.stack([cols[c][keep] for c in columns], axis=1).astype(np.float32)
    return DecodedCloud(points, columns, int((~keep).sum()), tuple(notes), renamed)


def _time_seconds(values: np.ndarray, name: str, stamp_s: float | None) -> np.ndarray:
    low = name.lower()
    v = values.astype(np.float64)
    if low in _TIME_NS or values.dtype.kind in "iu" and low not in _TIME_ABS_S:
        return v * 1e-9
    if low in _TIME_ABS_S or (stamp_s is not None and v.size and np.nanmedian(v) > 1e6):
        if v.size and np.nanmedian(v) > 1e14:  # absolute nanoseconds (livox_ros_driver2)
            return (values.astype(np.int64) - int(round((stamp_s or 0.0) * 1e9))) * 1e-9
        return v - (stamp_s or 0.0)
    return v


def encode_pointcloud2_fields(
    columns: Mapping[str, np.ndarray], dtypes: Mapping[str, str], *, big_endian: bool = False, pad: int = 0
) -> tuple[list[tuple[str, int, int, int]], int, bytes]:
    """Pack named columns into PointCloud2 bytes: ([(name, offset, datatype, count)], point_step, data).

    columns: name -> (N,) values; dtypes: name -> numpy kind ("f4", "u2", ...). `pad` extra bytes end
    each point (drivers align points to 16 or 32 bytes). Used to write bags (tests, benchmarks).
    """
    order = ">" if big_endian else "<"
    fields, offset = [], 0
    for name in columns:
        kind = dtypes[name]
        size = np.dtype(kind).itemsize
        offset = (offset + size - 1) // size * size  # natural alignment, as C structs lay them out
        fields.append((name, offset, DATATYPE_CODES[kind], 1))
        offset += size
    point_step = offset + pad
    dtype = np.dtype(
        {
            "names": [f[0] for f in fields],
            "formats": [order + dtypes[f[0]] for f in fields],
            "offsets": [f[1] for f in fields],
            "itemsize": point_step,
        }
    )
    n = len(next(iter(columns.values()))) if columns else 0
    out = np.zeros(n, dtype=dtype)
    for name, values in columns.items():
        out[name] = values
    return fields, point_step, out.tobytes()
