"""Waymo v1 calibration protos <-> `drivetl.calib` types (LidarModel, CameraModel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from drivetl.calib.camera import ROLLING_SHUTTER_DIRECTIONS
from drivetl.data.formats.waymo._names import DEFAULT_MAX_RANGE, camera_name, laser_name
from drivetl.data.formats.waymo._range_image import uniform_inclinations
from drivetl.errors import DataError

if TYPE_CHECKING:
    from drivetl.calib import CameraModel, LidarModel

#: Tolerance under which a set of inclinations counts as Waymo's uniform pattern (written as min/max).
_UNIFORM_TOL = 1e-9


def transform_from_proto(values: Any, where: str) -> np.ndarray:
    """(4, 4) float64 from a Waymo Transform's 16 row-major values (identity when empty)."""
    vals = np.asarray(values, dtype=np.float64)
    if vals.size == 0:
        return np.eye(4)
    if vals.size != 16 or not np.all(np.isfinite(vals)):
        raise DataError(f"{where}: a transform needs 16 finite values, got {vals.size}")
    return vals.reshape(4, 4)


@dataclass(frozen=True, eq=False)
class LaserCalib:
    """One laser's calibration as the frame stores it.

    vehicle_from_lidar: (4, 4) float64. beam_inclinations: (H,) ascending radians, or empty when the
    calibration only gives min/max (then `inclinations(H)` uses Waymo's uniform rule).
    """

    name: str
    laser_id: int
    vehicle_from_lidar: np.ndarray
    beam_inclinations: np.ndarray
    inclination_min: float
    inclination_max: float

    def inclinations(self, height: int, where: str) -> np.ndarray:
        """(height,) float64 ascending inclinations for a range image `height` rows tall."""
        if self.beam_inclinations.size == 0:
            return uniform_inclinations(height, self.inclination_min, self.inclination_max)
        if self.beam_inclinations.size != height:
            raise DataError(
                f"{where}: laser {self.name} calibration has {self.beam_inclinations.size} beam inclinations "
                f"but its range image has {height} rows; the calibration does not belong to this data"
            )
        return self.beam_inclinations


def laser_calibs(context: Any, where: str) -> dict[str, LaserCalib]:
    """Laser name -> `LaserCalib` from a Context proto."""
    out: dict[str, LaserCalib] = {}
    for c in context.laser_calibrations:
        name = laser_name(int(c.name), where)
        out[name] = LaserCalib(
            name=name,
            laser_id=int(c.name),
            vehicle_from_lidar=transform_from_proto(
                c.extrinsic.transform, f"{where}: laser {name} extrinsic"
            ),
            beam_inclinations=np.asarray(c.beam_inclinations, dtype=np.float64),
            inclination_min=float(c.beam_inclination_min),
            inclination_max=float(c.beam_inclination_max),
        )
    return out


def lidar_model(calib: LaserCalib, shape: tuple[int, int], where: str) -> LidarModel:
    """A `LidarModel` for one Waymo laser; shape = (rows, columns) of its range image."""
    from drivetl.calib import IntensityEncoding, LidarModel

    height, width = shape
    return LidarModel(
        name=calib.name,
        model=f"Waymo {calib.name} laser",
        vehicle_from_lidar=calib.vehicle_from_lidar,
        inclinations=calib.inclinations(height, where),
        columns=int(width),
        max_range=DEFAULT_MAX_RANGE.get(calib.name, 75.0),
        intensity=IntensityEncoding(kind="float", max_value=1.0, transform="tanh"),
        returns=2,
    )


def camera_model(cal: Any, image: Any | None, where: str) -> CameraModel:
    """A `CameraModel` from a CameraCalibration proto (and the frame's CameraImage for readout timing).

    Waymo's intrinsic vector is ``f_u, f_v, c_u, c_v, k1, k2, p1, p2, k3``; the extrinsic is
    vehicle_from_camera with the camera frame x forward, y left, z up. The readout time is the
    image's ``camera_readout_done_time - camera_trigger_time - shutter`` (0 when absent).
    """
    name = camera_name(int(cal.name), where)
    intr = list(cal.intrinsic)
    if len(intr) < 4:
        raise DataError(f"{where}: camera {name} intrinsic has {len(intr)} values, expected 9")
    readout = 0.0
    if image is not None and image.camera_readout_done_time > 0:
        readout = image.camera_readout_done_time - image.camera_trigger_time - image.shutter
    return make_camera_model(
        name,
        intr,
        transform_from_proto(cal.extrinsic.transform, f"{where}: camera {name} extrinsic"),
        int(cal.width),
        int(cal.height),
        int(cal.rolling_shutter_direction),
        readout,
    )


def make_camera_model(
    name: str,
    intrinsic: list[float],
    vehicle_from_camera: np.ndarray,
    width: int,
    height: int,
    rolling_shutter_direction: int,
    readout_time_s: float,
) -> CameraModel:
    """A `CameraModel` from Waymo's calibration values (shared by the v1 and v2 readers).

    intrinsic: ``f_u, f_v, c_u, c_v[, k1, k2, p1, p2, k3]`` (missing distortion terms are 0);
    vehicle_from_camera: (4, 4) float64; rolling_shutter_direction: Waymo's enum value;
    readout_time_s: clamped at 0.
    """
    from drivetl.calib import CameraModel

    intr = [float(v) for v in intrinsic] + [0.0] * (9 - len(intrinsic))
    direction = int(rolling_shutter_direction)
    return CameraModel(
        name=name,
        width=int(width),
        height=int(height),
        fx=intr[0],
        fy=intr[1],
        cx=intr[2],
        cy=intr[3],
        k1=intr[4],
        k2=intr[5],
        p1=intr[6],
        p2=intr[7],
        k3=intr[8],
        vehicle_from_camera=vehicle_from_camera,
        rolling_shutter_direction=ROLLING_SHUTTER_DIRECTIONS[direction]
        if 0 <= direction < len(ROLLING_SHUTTER_DIRECTIONS)
        else "UNKNOWN",
        readout_time_s=max(0.0, float(readout_time_s)),
    )


def beam_inclination_fields(lidar: LidarModel) -> tuple[list[float], float, float]:
    """(explicit beam inclinations, min, max) as Waymo stores a laser's: no explicit values when
    they follow the uniform rule (then min/max are the rule's bounds, as Waymo's side lasers)."""
    inc = np.asarray(lidar.inclinations, dtype=np.float64)
    if inc.size >= 2:
        step = (inc[-1] - inc[0]) / (inc.size - 1)
        lo, hi = inc[0] - 0.5 * step, inc[-1] + 0.5 * step
    else:
        lo = hi = float(inc[0]) if inc.size else 0.0
    uniform = inc.size >= 2 and np.allclose(
        uniform_inclinations(inc.size, lo, hi), inc, rtol=0, atol=_UNIFORM_TOL
    )
    if uniform:
        return [], float(lo), float(hi)
    return inc.tolist(), float(inc.min()) if inc.size else 0.0, float(inc.max()) if inc.size else 0.0


def fill_laser_calibration(proto: Any, lidar: LidarModel, laser_id: int) -> None:
    """Write one LaserCalibration: explicit beam inclinations unless they follow the uniform rule."""
    proto.name = laser_id
    proto.extrinsic.transform.extend(
        np.asarray(lidar.vehicle_from_lidar, dtype=np.float64).reshape(-1).tolist()
    )
    values, lo, hi = beam_inclination_fields(lidar)
    proto.beam_inclinations.extend(values)
    proto.beam_inclination_min = lo
    proto.beam_inclination_max = hi


def fill_camera_calibration(proto: Any, camera: CameraModel, camera_id: int) -> None:
    """Write one CameraCalibration from a `CameraModel`."""
    proto.name = camera_id
    proto.intrinsic.extend(
        [camera.fx, camera.fy, camera.cx, camera.cy, camera.k1, camera.k2, camera.p1, camera.p2, camera.k3]
    )
    proto.extrinsic.transform.extend(
        np.asarray(camera.vehicle_from_camera, dtype=np.float64).reshape(-1).tolist()
    )
    proto.width = int(camera.width)
    proto.height = int(camera.height)
    direction = camera.rolling_shutter_direction
    proto.rolling_shutter_direction = (
        ROLLING_SHUTTER_DIRECTIONS.index(direction) if direction in ROLLING_SHUTTER_DIRECTIONS else 0
    )
