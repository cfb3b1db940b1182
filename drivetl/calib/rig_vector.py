"""The rig vector: a fixed-length, normalized descriptor of a sensor rig.

`rig_vector(rig)` turns a `SensorRig` into a float32 vector of `RIG_FIELDS` (in that order). The
sample pipeline computes it for every frame from the rig that recorded it, and it travels in the
`Batch` (``batch.rig_vectors``), where a model that conditions on the rig (rig-conditioned FiLM,
`drivetl.models.adapters`) reads it.

Each physical value v is normalized as (v - center) / scale with the fixed constants of the table
below, chosen so that common rigs (16 to 128 beams, mounted 1 to 2.5 m high) land roughly in
[-1, 1]; flags and one-hots stay 0/1. Fixed constants (rather than statistics fitted on a set of
rigs) keep the vector of a rig the same in every run and on every machine.

The *main* LiDAR is the one named ``TOP`` if present, otherwise the one with the most beams; the
*front* camera is the one named ``FRONT`` if present, otherwise the first camera. Both can be
chosen explicitly. A rig without LiDAR (or camera) gets zeros for those fields and a 0 flag.

Angles: inclinations are beam elevation angles; pitch and roll are read from the sensor's
``vehicle_from_sensor`` rotation with R = Rz(yaw) Ry(pitch) Rx(roll) (calib's convention), so the
yaw of the mounting does not affect them. Heights are above the rig's ground plane (its `ground`
value, when it is a number) in metres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from drivetl.errors import RigError

if TYPE_CHECKING:
    from drivetl.calib.rig import SensorRig

__all__ = ["RIG_FIELDS", "RIG_FIELD_DOCS", "RIG_VECTOR_DIM", "describe_rig", "main_lidar", "rig_vector"]

# name, center, scale, meaning
_TABLE: tuple[tuple[str, float, float, str], ...] = (
    ("lidar.present", 0.0, 1.0, "1 when the rig has a LiDAR"),
    ("lidar.beam_count", 64.0, 64.0, "number of beams of the main LiDAR"),
    ("lidar.inclination_min_deg", -15.0, 15.0, "lowest beam inclination, degrees"),
    ("lidar.inclination_max_deg", 5.0, 10.0, "highest beam inclination, degrees"),
    ("lidar.inclination_spacing_deg", 1.0, 1.0, "mean spacing between adjacent beams, degrees"),
    ("lidar.height_m", 1.8, 0.5, "main LiDAR origin above the ground, metres"),
    ("lidar.pitch_deg", 0.0, 5.0, "main LiDAR mounting pitch, degrees (positive tilts +x down)"),
    ("lidar.roll_deg", 0.0, 5.0, "main LiDAR mounting roll, degrees"),
    ("lidar.azimuth_resolution_deg", 0.2, 0.2, "360 / columns, degrees"),
    ("lidar.max_range_m", 100.0, 100.0, "maximum range, metres"),
    ("lidar.intensity_float", 0.0, 1.0, "intensity encoding one-hot: float"),
    ("lidar.intensity_uint8", 0.0, 1.0, "intensity encoding one-hot: uint8"),
    ("lidar.intensity_uint16", 0.0, 1.0, "intensity encoding one-hot: uint16"),
    ("lidar.intensity_tanh", 0.0, 1.0, "1 when raw intensity maps to [0, 1] through tanh"),
    ("lidar.dual_return", 0.0, 1.0, "1 when the LiDAR reports two returns"),
    ("rig.lidar_count", 1.0, 4.0, "number of LiDARs"),
    ("camera.present", 0.0, 1.0, "1 when the rig has a camera"),
    ("camera.hfov_deg", 60.0, 60.0, "front camera horizontal field of view 2 atan(w / 2 fx), degrees"),
    ("camera.vfov_deg", 40.0, 40.0, "front camera vertical field of view 2 atan(h / 2 fy), degrees"),
    ("camera.height_m", 1.8, 0.5, "front camera above the ground, metres"),
    ("camera.pitch_deg", 0.0, 5.0, "front camera mounting pitch, degrees"),
    ("rig.camera_count", 1.0, 4.0, "number of cameras"),
)

#: Names of the descriptor's entries, in vector order.
RIG_FIELDS: tuple[str, ...] = tuple(row[0] for row in _TABLE)
#: (center, scale, meaning) of each field.
RIG_FIELD_DOCS: dict[str, tuple[float, float, str]] = {row[0]: row[1:] for row in _TABLE}
#: Length of a rig vector.
RIG_VECTOR_DIM = len(RIG_FIELDS)


def _pitch_roll_deg(sensor_to_vehicle: np.ndarray) -> tuple[float, float]:
    r = np.asarray(sensor_to_vehicle, dtype=np.float64)[:3, :3]
    pitch = math.asin(float(np.clip(-r[2, 0], -1.0, 1.0)))
    roll = math.atan2(float(r[2, 1]), float(r[2, 2]))
    return math.degrees(pitch), math.degrees(roll)


def _pick(sensors: Sequence[Any], name: str | None, preferred: str, kind: str, rig: Any) -> Any | None:
    if not sensors:
        if name is not None:
            raise RigError(f"{_where(rig)}: rig has no {kind}s, but {kind} {name!r} was asked for")
        return None
    wanted = name or preferred
    for s in sensors:
        if s.name == wanted:
            return s
    if name is not None:
        known = ", ".join(s.name for s in sensors)
        raise RigError(f"{_where(rig)}: no {kind} named {name!r} (rig has {known})")
    return None


def _where(rig: Any) -> str:
    return str(getattr(rig, "source_path", None) or getattr(rig, "name", "rig"))


def main_lidar(rig: SensorRig):
    """The rig's main LiDAR: the one named ``TOP``, else the one with the most beams (None without LiDARs)."""
    lidars = tuple(rig.lidars)
    if not lidars:
        return None
    return _pick(lidars, None, "TOP", "lidar", rig) or max(lidars, key=lambda m: len(m.inclinations))


def describe_rig(rig: SensorRig, lidar: str | None = None, camera: str | None = None) -> dict[str, float]:
    """The physical (un-normalized) value of every field of `RIG_FIELDS` for `rig`."""
    ground = rig.ground if isinstance(rig.ground, (int, float)) else 0.0
    values = dict.fromkeys(RIG_FIELDS, 0.0)
    lidars = tuple(rig.lidars)
    cameras = tuple(rig.cameras)
    main = _pick(lidars, lidar, "TOP", "lidar", rig) if lidar is not None else main_lidar(rig)
    values["rig.lidar_count"] = float(len(lidars))
    values["rig.camera_count"] = float(len(cameras))
    if main is not None:
        inc = np.sort(np.degrees(np.asarray(main.inclinations, dtype=np.float64)))
        m = np.asarray(main.vehicle_from_lidar, dtype=np.float64)
        pitch, roll = _pitch_roll_deg(m)
        kind = str(main.intensity.kind)
        values.update({
            "lidar.present": 1.0,
            "lidar.beam_count": float(inc.size),
            "lidar.inclination_min_deg": float(inc[0]),
            "lidar.inclination_max_deg": float(inc[-1]),
            "lidar.inclination_spacing_deg": float(np.diff(inc).mean()) if inc.size > 1 else 0.0,
            "lidar.height_m": float(m[2, 3]) - ground,
            "lidar.pitch_deg": pitch,
            "lidar.roll_deg": roll,
            "lidar.azimuth_resolution_deg": 360.0 / float(main.columns),
            "lidar.max_range_m": float(main.max_range),
            "lidar.intensity_float": float(kind == "float"),
            "lidar.intensity_uint8": float(kind == "uint8"),
            "lidar.intensity_uint16": float(kind == "uint16"),
            "lidar.intensity_tanh": float(getattr(main.intensity, "transform", "linear") == "tanh"),
            "lidar.dual_return": float(int(getattr(main, "returns", 1)) >= 2),
        })
    front = _pick(cameras, camera, "FRONT", "camera", rig)
    if front is None and cameras:
        front = cameras[0]
    if front is not None:
        m = np.asarray(front.vehicle_from_camera, dtype=np.float64)
        values.update({
            "camera.present": 1.0,
            "camera.hfov_deg": math.degrees(2.0 * math.atan(front.width / (2.0 * front.fx))),
            "camera.vfov_deg": math.degrees(2.0 * math.atan(front.height / (2.0 * front.fy))),
            "camera.height_m": float(m[2, 3]) - ground,
            "camera.pitch_deg": _pitch_roll_deg(m)[0],
        })
    return values


def normalize_description(values: dict[str, float]) -> list[float]:
    """Apply the fixed normalization of `RIG_FIELD_DOCS`; absent sensors stay at exactly 0."""
    present = {"lidar": values["lidar.present"] > 0, "camera": values["camera.present"] > 0}
    out = []
    for name in RIG_FIELDS:
        center, scale, _ = RIG_FIELD_DOCS[name]
        group = name.split(".")[0]
        if group in present and not present[group] and not name.endswith(".present"):
            out.append(0.0)
        else:
            out.append((values[name] - center) / scale)
    return out


def rig_vector(rig: SensorRig, lidar: str | None = None, camera: str | None = None) -> np.ndarray:
    """(`RIG_VECTOR_DIM`,) float32: the normalized descriptor of `rig` (fields `RIG_FIELDS`).

    lidar / camera: which LiDAR and camera describe the rig (default: ``TOP`` or the one with the
    most beams; ``FRONT`` or the first camera). RigError when a named sensor is not in the rig.
    """
    return np.asarray(normalize_description(describe_rig(rig, lidar, camera)), dtype=np.float32)
