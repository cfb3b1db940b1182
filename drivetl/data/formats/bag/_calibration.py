"""A rig from the log alone: tf for the mountings, CameraInfo for the intrinsics, sweeps for the beams.

One short pass reads `/tf_static` (and `/tf`), the first CameraInfo of each camera and the first
`sweeps` LiDAR messages, and stops as soon as it has them (a multi-gigabyte log is not read to its end).

- `vehicle_from_sensor` of the LiDAR: the tf path from the cloud's `frame_id` to the vehicle frame;
  of a camera: the path from its CameraInfo's (optical) `frame_id`, turned into the Waymo camera frame.
- Beams: with a ring field, one beam per ring value at the median elevation of its points (sensor
  frame); without one, `drivetl.calib.beams.estimate_beams` over the sweeps' elevations. A
  single-layer scanner gives one beam.
- Columns: 2 pi over the median azimuth step between neighbouring points of one beam.
- Intensity: uint8 / uint16 fields keep their type; float fields holding whole numbers up to 255 (the
  Velodyne and Hesai drivers) are uint8 with max 255; other floats are `float` with their sweeps' max.
- max_range: the farthest return seen, rounded up to 10 m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivetl.calib import CameraModel, IntensityEncoding, LidarModel, SensorRig
from drivetl.calib.beams import (
    beams_from_rings,
    estimate_beams,
    estimate_columns,
    nearest_beam,
    point_inclinations,
)
from drivetl.data.formats.bag._camera import camera_from_info
from drivetl.data.formats.bag._pointcloud2 import decode_pointcloud2, point_array
from drivetl.data.formats.bag._source import LogReader
from drivetl.data.formats.bag._tf import TfTree, frame_name, stamp_ns
from drivetl.data.formats.bag._topics import LogSelection, check_topics
from drivetl.errors import DataError, RigError


@dataclass
class LogCalibration:
    """What the calibration pass found: the tf tree, the CameraInfos, the first sweeps."""

    tf: TfTree = field(default_factory=TfTree)
    infos: dict[str, tuple[Any, str]] = field(default_factory=dict)  # camera topic -> (msg, where)
    sweeps: list[np.ndarray] = field(default_factory=list)  # (N, C) sensor-frame points
    columns: tuple[str, ...] = ()
    lidar_frame: str = ""
    first_stamp_ns: int = 0
    intensity_kind: str = "f4"


def read_calibration(reader: LogReader, sel: LogSelection, sweeps: int = 5) -> LogCalibration:
    """The calibration pass over an open log (stops once it has `sweeps` sweeps and every CameraInfo)."""
    where = str(reader.path)
    info_topics = check_topics(sel, reader.topics, where)
    cal = LogCalibration()
    topics = {sel.lidar.topic, sel.tf_static, sel.tf, *info_topics.values()}
    by_info = {v: k for k, v in info_topics.items()}
    for m in reader.messages(t for t in topics if t in reader.topics):
        at = f"{where}: topic {m.topic} message {m.index}"
        if m.topic in (sel.tf_static, sel.tf):
            cal.tf.add(m.msg, static=m.topic == sel.tf_static, where=at)
        elif m.topic in by_info:
            cal.infos.setdefault(by_info[m.topic], (m.msg, at))
        elif m.topic == sel.lidar.topic and len(cal.sweeps) < sweeps:
            stamp = stamp_ns(m.msg.header.stamp)
            cloud = decode_pointcloud2(m.msg, at, stamp_s=stamp * 1e-9, field_map=sel.field_map)
            if not cal.sweeps:
                cal.columns, cal.lidar_frame, cal.first_stamp_ns = (
                    cloud.columns,
                    frame_name(m.msg.header.frame_id),
                    stamp,
                )
                arr = point_array(m.msg, at)
                src = next((s for s, c in cloud.renamed.items() if c == "intensity"), None)
                cal.intensity_kind = arr.dtype.fields[src][0].str[1:] if src else "f4"
            if cloud.columns == cal.columns:
                cal.sweeps.append(cloud.points)
        if len(cal.sweeps) >= sweeps and len(cal.infos) == len(info_topics) and _connected(cal, sel):
            break
    if not cal.sweeps:
        raise DataError(f"{where}: topic {sel.lidar.topic} has no messages")
    missing = [t for t in info_topics if t not in cal.infos]
    if missing:
        raise DataError(f"{where}: no CameraInfo message for {missing[0]} (topic {info_topics[missing[0]]})")
    return cal


def _connected(cal: LogCalibration, sel: LogSelection) -> bool:
    frames = [cal.lidar_frame] + [frame_name(msg.header.frame_id) for msg, _ in cal.infos.values()]
    return all(cal.tf.dst_from_src(sel.vehicle_frame, f) is not None for f in frames)


def lidar_from_sweeps(cal: LogCalibration, name: str, vehicle_from_lidar: np.ndarray) -> LidarModel:
    """The rig's LiDAR from the first sweeps (sensor frame) and the mounting."""
    pts = np.concatenate(cal.sweeps)
    cols = cal.columns
    if len(pts) == 0:
        raise DataError(f"LiDAR {name}: the first sweeps hold no valid points; cannot describe its beams")
    xyz = pts[:, :3].astype(np.float64)
    elev = point_inclinations(xyz)
    if "laser_id" in cols:
        try:
            inc, beam = beams_from_rings(xyz, pts[:, cols.index("laser_id")])
        except DataError as exc:
            raise DataError(f"LiDAR {name}: {exc}") from exc
    elif np.ptp(elev) < math.radians(0.05):
        inc = np.array([float(np.median(elev))])
        beam = np.zeros(len(xyz), np.int64)
    else:
        inc = estimate_beams([xyz]).inclinations
        beam, _ = nearest_beam(elev, inc)
    columns = estimate_columns(xyz, beam)
    rng = float(np.linalg.norm(xyz, axis=1).max())
    raw = pts[:, 3].astype(np.float64)
    kind = cal.intensity_kind
    if kind == "u1" or (kind[0] == "f" and raw.size and raw.max() <= 255 and np.all(raw == np.round(raw))):
        enc = IntensityEncoding("uint8", 255.0)
    elif kind == "u2":
        enc = IntensityEncoding("uint16", 65535.0)
    else:
        enc = IntensityEncoding("float", float(max(raw.max(initial=0.0), 1e-6)))
    return LidarModel(
        name=name,
        model=f"from log ({len(inc)} beams)",
        vehicle_from_lidar=vehicle_from_lidar,
        inclinations=inc,
        columns=columns,
        max_range=max(10.0, math.ceil(rng / 10.0) * 10.0),
        intensity=enc,
    )


def rig_from_calibration(cal: LogCalibration, sel: LogSelection, name: str, where: str) -> SensorRig:
    """The SensorRig of one LiDAR and the selected cameras; RigError/DataError naming the log if wrong."""
    vehicle_from_lidar = cal.tf.require(sel.vehicle_frame, cal.lidar_frame, where)
    lidar = lidar_from_sweeps(cal, sel.lidar.name, vehicle_from_lidar)
    cameras: list[CameraModel] = []
    for cam in sel.cameras:
        msg, at = cal.infos[cam.topic]
        vehicle_from_optical = cal.tf.require(sel.vehicle_frame, frame_name(msg.header.frame_id), at)
        cameras.append(camera_from_info(msg, cam.name, vehicle_from_optical, at))
    try:
        return SensorRig(
            name=name, lidars=(lidar,), cameras=tuple(cameras), ground="estimate", source_path=where
        )
    except RigError as exc:
        raise RigError(f"{where}: the rig read from the log is invalid ({exc})") from exc
