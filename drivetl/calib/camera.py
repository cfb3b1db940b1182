"""Pinhole camera with Brown–Conrady distortion, in Waymo's camera frame and OpenCV's optical frame.

Frames. The *camera frame* is Waymo's: x forward (along the optical axis), y left, z up. The
*optical frame* is OpenCV's: x right, y down, z forward. `OPTICAL_FROM_CAMERA` converts between them.

Pixels. `u = fx * x_d + cx`, `v = fy * y_d + cy` with (x_d, y_d) the distorted normalized
coordinates, as in OpenCV and Waymo (no half-pixel shift). The image spans [0, width) x [0, height);
pixel column `floor(u)` and row `floor(v)`.

Distortion (OpenCV/Waymo order k1, k2, p1, p2, k3), with r2 = x^2 + y^2:
    x_d = x (1 + k1 r2 + k2 r2^2 + k3 r2^3) + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d = y (1 + k1 r2 + k2 r2^2 + k3 r2^3) + p1 (r2 + 2 y^2) + 2 p2 x y
Its inverse is found by Newton's method. A polynomial model is only valid up to the radius where
the radial map stops increasing; points beyond it are reported as outside the image.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivetl.calib import _backend as B
from drivetl.errors import DataError, RigError, short_repr

__all__ = ["CAMERA_FROM_OPTICAL", "OPTICAL_FROM_CAMERA", "ROLLING_SHUTTER_DIRECTIONS", "CameraModel"]

#: Waymo camera frame (x fwd, y left, z up) -> OpenCV optical frame (x right, y down, z fwd).
OPTICAL_FROM_CAMERA = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
OPTICAL_FROM_CAMERA.setflags(write=False)
#: The inverse of `OPTICAL_FROM_CAMERA`.
CAMERA_FROM_OPTICAL = np.ascontiguousarray(OPTICAL_FROM_CAMERA.T)
CAMERA_FROM_OPTICAL.setflags(write=False)

#: Waymo's CameraCalibration.RollingShutterReadOutDirection names.
ROLLING_SHUTTER_DIRECTIONS = (
    "UNKNOWN",
    "TOP_TO_BOTTOM",
    "LEFT_TO_RIGHT",
    "BOTTOM_TO_TOP",
    "RIGHT_TO_LEFT",
    "GLOBAL_SHUTTER",
)


def _readonly_transform(value: Any, what: str) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)
    if arr.shape != (4, 4) or not np.all(np.isfinite(arr)):
        raise RigError(f"{what}: expected a finite 4x4 matrix, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A camera's intrinsics, distortion, image size and mounting.

    vehicle_from_camera: (4, 4) float64, camera = Waymo camera frame (x fwd, y left, z up), metres.
    fx, fy, cx, cy: pixels. k1, k2, p1, p2, k3: Brown–Conrady coefficients (OpenCV/Waymo order).
    rolling_shutter_direction: a Waymo enum name; readout_time_s: seconds for the whole readout.
    """

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0
    vehicle_from_camera: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(4))
    rolling_shutter_direction: str = "GLOBAL_SHUTTER"
    readout_time_s: float = 0.0

    def __post_init__(self) -> None:
        where = f"camera {self.name}"
        object.__setattr__(self, "vehicle_from_camera", _readonly_transform(self.vehicle_from_camera, where))
        for key in ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "readout_time_s"):
            value = float(getattr(self, key))
            if not math.isfinite(value):
                raise RigError(f"{where}: {key} must be finite, got {value}")
            object.__setattr__(self, key, value)
        if not (self.fx > 0 and self.fy > 0):
            raise RigError(f"{where}: focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if (
            int(self.width) != self.width
            or int(self.height) != self.height
            or self.width <= 0
            or self.height <= 0
        ):
            raise RigError(
                f"{where}: width and height must be positive integers, got {self.width}x{self.height}"
            )
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        if self.rolling_shutter_direction not in ROLLING_SHUTTER_DIRECTIONS:
            raise RigError(
                f"{where}: rolling shutter direction {short_repr(self.rolling_shutter_direction)} "
                "is not one of "
                f"{', '.join(ROLLING_SHUTTER_DIRECTIONS)}"
            )
        if self.readout_time_s < 0:
            raise RigError(f"{where}: readout time must be >= 0 s, got {self.readout_time_s}")

    # ----------------------------------------------------------------- transforms and intrinsics
    @functools.cached_property
    def camera_from_vehicle(self) -> np.ndarray:
        """(4, 4) float64: vehicle -> Waymo camera frame (full inverse: exact for nearly-rigid input too)."""
        m = np.linalg.inv(self.vehicle_from_camera)
        m.setflags(write=False)
        return m

    @functools.cached_property
    def optical_from_vehicle(self) -> np.ndarray:
        """(4, 4) float64: vehicle frame -> OpenCV optical frame."""
        m = OPTICAL_FROM_CAMERA @ self.camera_from_vehicle
        m.setflags(write=False)
        return m

    @functools.cached_property
    def vehicle_from_optical(self) -> np.ndarray:
        """(4, 4) float64: OpenCV optical frame -> vehicle frame."""
        m = self.vehicle_from_camera @ CAMERA_FROM_OPTICAL
        m.setflags(write=False)
        return m

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the standard name of the intrinsic matrix
        """(3, 3) float64 intrinsic matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def distortion(self) -> tuple[float, float, float, float, float]:
        """(k1, k2, p1, p2, k3)."""
        return (self.k1, self.k2, self.p1, self.p2, self.k3)

    @property
    def has_distortion(self) -> bool:
        """True when any distortion coefficient is non-zero."""
        return any(c != 0.0 for c in self.distortion)

    @functools.cached_property
    def max_valid_radius(self) -> float:
        """Largest undistorted normalized radius where the radial map r -> r (1 + k1 r^2 + ...) still grows.

        `inf` when it grows everywhere (checked up to r = 20, i.e. about 87 degrees off axis).
        """
        r = np.linspace(0.0, 20.0, 200_001)
        r2 = r * r
        slope = 1 + 3 * self.k1 * r2 + 5 * self.k2 * r2 * r2 + 7 * self.k3 * r2 * r2 * r2
        bad = np.nonzero(slope <= 0)[0]
        return float(r[bad[0]]) if bad.size else math.inf

    def fov_deg(self) -> tuple[float, float]:
        """(horizontal, vertical) field of view in degrees through the principal point, with distortion."""
        xs = self.undistort(np.array([[-self.cx / self.fx, 0.0], [(self.width - self.cx) / self.fx, 0.0]]))
        ys = self.undistort(np.array([[0.0, -self.cy / self.fy], [0.0, (self.height - self.cy) / self.fy]]))
        hfov = math.degrees(math.atan(-xs[0, 0]) + math.atan(xs[1, 0]))
        vfov = math.degrees(math.atan(-ys[0, 1]) + math.atan(ys[1, 1]))
        return hfov, vfov

    # ----------------------------------------------------------------- distortion
    def distort(self, xy: Any) -> Any:
        """(N, 2) undistorted normalized coordinates (optical frame, x/z and y/z) -> (N, 2) distorted."""
        x, y = xy[..., 0], xy[..., 1]
        k1, k2, p1, p2, k3 = self.distortion
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return B.stack([xd, yd], axis=-1)

    def undistort(self, xy_dist: Any, iterations: int = 20) -> Any:
        """(N, 2) distorted normalized coordinates -> (N, 2) undistorted, by Newton's method.

        Starts from the distorted point, keeps every iterate inside `max_valid_radius` (where the model
        is invertible) and stops early once every update is below 1e-14; that takes a handful of steps.
        A distorted point that no ray inside the valid radius reaches (a corner of an image whose
        calibration does not cover it) comes back as NaN rather than as a wrong ray.
        """
        if not self.has_distortion:
            return xy_dist * 1.0
        k1, k2, p1, p2, k3 = self.distortion
        xd, yd = xy_dist[..., 0], xy_dist[..., 1]
        x, y = xd * 1.0, yd * 1.0
        r_cap = 0.999 * self.max_valid_radius
        for _ in range(iterations):
            r2 = x * x + y * y
            radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
            dradial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
            fx_ = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
            fy_ = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
            j11 = radial + 2 * x * x * dradial + 2 * p1 * y + 6 * p2 * x
            j12 = 2 * x * y * dradial + 2 * p1 * x + 2 * p2 * y
            j22 = radial + 2 * y * y * dradial + 6 * p1 * y + 2 * p2 * x
            det = j11 * j22 - j12 * j12
            det = B.where(B.abs(det) < 1e-12, B.full_like(det, 1e-12), det)
            dx = (j22 * fx_ - j12 * fy_) / det
            dy = (j11 * fy_ - j12 * fx_) / det
            x = x - dx
            y = y - dy
            if math.isfinite(r_cap):
                r = (x * x + y * y) ** 0.5
                shrink = B.where(r > r_cap, r_cap / B.where(r > 0, r, B.ones_like(r)), B.ones_like(r))
                x, y = x * shrink, y * shrink
            if B.max_abs(dx) < 1e-14 and B.max_abs(dy) < 1e-14:
                break
        xy = B.stack([x, y], axis=-1)
        residual = B.abs(self.distort(xy) - xy_dist)
        bad = ~((residual[..., 0] < B.tolerance(xy)) & (residual[..., 1] < B.tolerance(xy)))
        return B.where(bad[..., None], B.full_like(xy, math.nan), xy)

    # ----------------------------------------------------------------- project / unproject
    def project(self, points_vehicle: Any) -> tuple[Any, Any, Any]:
        """Project (N, 3) points (vehicle frame, metres; numpy or torch) into the image.

        Returns (uv (N, 2) pixels, depth (N,) metres along the optical axis, in_image (N,) bool):
        in_image = depth > 0, inside the distortion model's valid radius, 0 <= u < width, 0 <= v < height.
        Output arrays have the input's type, dtype and device.
        """
        pts = B.transform(self.optical_from_vehicle, points_vehicle)
        depth = pts[..., 2]
        positive = depth > 0
        safe = B.where(positive, depth, B.ones_like(depth))
        xy = B.stack([pts[..., 0] / safe, pts[..., 1] / safe], axis=-1)
        r2 = xy[..., 0] ** 2 + xy[..., 1] ** 2
        valid = positive & (r2 < self.max_valid_radius**2)
        d = self.distort(xy)
        uv = B.stack([self.fx * d[..., 0] + self.cx, self.fy * d[..., 1] + self.cy], axis=-1)
        u, v = uv[..., 0], uv[..., 1]
        in_image = valid & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return uv, depth, in_image

    def unproject(self, uv: Any, depth: Any) -> Any:
        """(N, 2) pixels and (N,) depths along the optical axis (metres) -> (N, 3) vehicle-frame points."""
        xd = B.stack([(uv[..., 0] - self.cx) / self.fx, (uv[..., 1] - self.cy) / self.fy], axis=-1)
        xy = self.undistort(xd)
        pts = B.stack([xy[..., 0] * depth, xy[..., 1] * depth, depth * 1.0], axis=-1)
        return B.transform(self.vehicle_from_optical, pts)

    # ----------------------------------------------------------------- checks and variants
    def check_image_size(self, width: int, height: int, where: str) -> None:
        """Raise DataError naming `where` when an image's size is not this camera's width x height."""
        if (int(width), int(height)) != (self.width, self.height):
            raise DataError(
                f"{where}: image is {width}x{height} but camera {self.name} is calibrated for "
                f"{self.width}x{self.height}; resize the image or use CameraModel.scaled()"
            )

    def with_vehicle_from_camera(self, vehicle_from_camera: np.ndarray) -> CameraModel:
        """The same camera mounted at `vehicle_from_camera` (4, 4)."""
        return dataclasses.replace(self, vehicle_from_camera=vehicle_from_camera)

    def scaled(self, sx: float, sy: float) -> CameraModel:
        """The camera of an image resized by (sx, sy): width, fx, cx times sx; height, fy, cy times sy.

        With the image spanning [0, width), a resize maps u to u * sx exactly; distortion is unchanged.
        """
        width, height = round(self.width * sx), round(self.height * sy)
        return dataclasses.replace(
            self,
            width=width,
            height=height,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
        )
