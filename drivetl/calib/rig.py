"""A vehicle's sensor rig (LiDARs + cameras) and its `rig.yaml` file: load, validate, save.

Calibration is data: it lives beside the recordings, in a YAML file like

    name: fleet_xt32
    ground: 0.0                     # z of the ground in the vehicle frame, or: estimate
    lidars:
      - name: TOP
        model: Hesai PandarXT32
        vehicle_from_sensor: {translation: [1.2, 0.0, 1.9], rpy_deg: [0.0, 2.0, 0.0]}
        beams: {inclinations_deg: [...]}          # or {count: 64, min_deg: -17.6, max_deg: 2.4}
        columns: 2000                             # or azimuth_resolution_deg: 0.18
        max_range: 120.0
        intensity: {encoding: uint8, max: 255}
    cameras:
      - name: FRONT
        width: 1920
        height: 1080
        intrinsics: {fx: 1000.0, fy: 1000.0, cx: 960.0, cy: 540.0}
        distortion: {k1: -0.3, k2: 0.1}
        vehicle_from_sensor: {translation: [...], rpy_deg: [...]}   # Waymo camera frame

Every validation error names the file and the key ("rig.yaml: lidars[0].vehicle_from_sensor: rotation
is not orthonormal (det=0.93)").
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from drivetl._io import atomic_write_text, read_yaml
from drivetl.calib import _rig_schema as schema
from drivetl.calib.camera import CameraModel
from drivetl.calib.lidar import LidarModel
from drivetl.errors import RigError, short_repr

__all__ = ["SensorRig", "load_rig", "rig_from_dict", "rig_to_dict", "save_rig"]

_RIG_KEYS = ("name", "ground", "lidars", "cameras")


@dataclass(frozen=True, eq=False)
class SensorRig:
    """The sensors of one vehicle, in its vehicle frame (x forward, y left, z up, metres).

    ground: z of the ground plane under the vehicle (canonicalization shifts z by -ground), or
    "estimate" to fit it from the points. source_path: the rig file, for error messages.
    """

    name: str
    lidars: tuple[LidarModel, ...] = ()
    cameras: tuple[CameraModel, ...] = ()
    ground: float | Literal["estimate"] = 0.0
    source_path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lidars", tuple(self.lidars))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        where = self.source_path or f"rig {self.name}"
        for kind, sensors in (("lidars", self.lidars), ("cameras", self.cameras)):
            seen: set[str] = set()
            for i, sensor in enumerate(sensors):
                if sensor.name in seen:
                    raise RigError(
                        f"{where}: {kind}[{i}].name: sensor name {short_repr(sensor.name)} is used twice"
                    )
                seen.add(sensor.name)
        if self.ground != "estimate":
            if (
                isinstance(self.ground, bool)
                or not isinstance(self.ground, int | float)
                or not math.isfinite(self.ground)
            ):
                raise RigError(
                    f"{where}: ground: expected a number or 'estimate', got {short_repr(self.ground)}"
                )
            object.__setattr__(self, "ground", float(self.ground))

    @property
    def lidar_names(self) -> tuple[str, ...]:
        """The LiDARs' names, in rig order."""
        return tuple(s.name for s in self.lidars)

    @property
    def camera_names(self) -> tuple[str, ...]:
        """The cameras' names, in rig order."""
        return tuple(s.name for s in self.cameras)

    def lidar(self, name: str) -> LidarModel:
        """The LiDAR called `name`; RigError naming the known LiDARs otherwise."""
        for sensor in self.lidars:
            if sensor.name == name:
                return sensor
        raise RigError(
            f"{self.source_path or 'rig ' + self.name}: no lidar named {short_repr(name)} "
            f"(known: {', '.join(self.lidar_names) or 'none'})"
        )

    def camera(self, name: str) -> CameraModel:
        """The camera called `name`; RigError naming the known cameras otherwise."""
        for sensor in self.cameras:
            if sensor.name == name:
                return sensor
        raise RigError(
            f"{self.source_path or 'rig ' + self.name}: no camera named {short_repr(name)} "
            f"(known: {', '.join(self.camera_names) or 'none'})"
        )


def rig_from_dict(d: Any, where: str = "rig") -> SensorRig:
    """Build and validate a rig from the parsed YAML mapping; errors start with `where` (the file)."""
    top = schema.mapping(d, where, _RIG_KEYS)
    name = top.get("name", Path(where).stem)
    if not isinstance(name, str) or not name:
        raise RigError(f"{where}: name: expected a non-empty string, got {short_repr(name)}")
    ground = top.get("ground", 0.0)
    if ground != "estimate":
        ground = schema.number(ground, f"{where}: ground")
    lidars = _sensor_list(top, "lidars", where)
    cameras = _sensor_list(top, "cameras", where)
    if not lidars and not cameras:
        raise RigError(f"{where}: the rig lists no sensors; add a 'lidars' or 'cameras' list")
    return SensorRig(
        name=name,
        lidars=tuple(schema.lidar_from_dict(v, f"{where}: lidars[{i}]") for i, v in enumerate(lidars)),
        cameras=tuple(schema.camera_from_dict(v, f"{where}: cameras[{i}]") for i, v in enumerate(cameras)),
        ground=ground,
        source_path=where,
    )


def _sensor_list(top: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = top.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RigError(f"{where}: {key}: expected a list of sensors, got {type(value).__name__}")
    return value


def rig_to_dict(rig: SensorRig) -> dict[str, Any]:
    """The YAML mapping of `rig` (plain lists and floats; loading it gives the same rig)."""
    return {
        "name": rig.name,
        "ground": rig.ground,
        "lidars": [schema.lidar_to_dict(s) for s in rig.lidars],
        "cameras": [schema.camera_to_dict(s) for s in rig.cameras],
    }


def load_rig(path: str | os.PathLike) -> SensorRig:
    """Read and validate a rig file (bounded `yaml.safe_load`); RigError naming the file and key."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RigError(f"{where}: no such rig file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RigError(f"{where}: cannot read the rig file ({exc})") from None
    data = read_yaml(text, where, RigError)
    if data is None:
        raise RigError(f"{where}: the rig file is empty")
    return rig_from_dict(data, where)


def save_rig(rig: SensorRig, path: str | os.PathLike) -> None:
    """Write `rig` as YAML, atomically (a complete file or the previous one, never half of one)."""
    text = yaml.safe_dump(rig_to_dict(rig), sort_keys=False, default_flow_style=None, width=100)
    atomic_write_text(path, f"# sensor rig {rig.name} (drivetl rig.yaml)\n{text}")
