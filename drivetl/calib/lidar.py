"""Spinning LiDAR geometry: beams, Waymo v1 range-image conventions, intensity encodings.

Range images follow Waymo Open Dataset v1 exactly (H rows = beams, W columns = azimuth bins):
- row r (0 = top) has inclination `inclinations[::-1][r]` (highest beam first);
- column c has azimuth `((W - c - 0.5) / W * 2 - 1) * pi - az_correction` in the sensor frame, with
  `az_correction = atan2(vehicle_from_lidar[1, 0], vehicle_from_lidar[0, 0])`; column 0 looks backwards
  in the vehicle frame and the azimuth decreases to the right;
- a point in the sensor frame is `r * (cos(inc) cos(az), cos(inc) sin(az), sin(inc))`;
- pixels with range <= 0 hold no return.
A per-beam azimuth offset (Hesai-style channel tables) is added to the column azimuth of that beam.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from drivetl.errors import RigError, short_repr

__all__ = ["IntensityEncoding", "LidarModel"]

_INTENSITY_KINDS = ("float", "uint8", "uint16")
_INTENSITY_TRANSFORMS = ("linear", "tanh")
_UINT_MAX = {"uint8": 255.0, "uint16": 65535.0}


@dataclass(frozen=True)
class IntensityEncoding:
    """How a LiDAR's raw intensity maps to the canonical [0, 1].

    kind: storage type of the raw values; max_value: the raw value that maps to 1.0 (linear) or the
    scale of the tanh (canonical = tanh(raw / max_value)); Waymo's raw intensity is unbounded, so a
    Waymo-like rig uses `float`, 1.0, `tanh`.
    """

    kind: Literal["float", "uint8", "uint16"] = "float"
    max_value: float = 1.0
    transform: Literal["linear", "tanh"] = "linear"

    def __post_init__(self) -> None:
        if self.kind not in _INTENSITY_KINDS:
            raise RigError(
                f"intensity encoding {short_repr(self.kind)} is not one of {', '.join(_INTENSITY_KINDS)}"
            )
        if self.transform not in _INTENSITY_TRANSFORMS:
            raise RigError(
                f"intensity transform {short_repr(self.transform)} is not one of "
                f"{', '.join(_INTENSITY_TRANSFORMS)}"
            )
        value = float(self.max_value)
        if not (math.isfinite(value) and value > 0):
            raise RigError(f"intensity max must be a positive number, got {short_repr(self.max_value)}")
        if self.kind in _UINT_MAX and value > _UINT_MAX[self.kind]:
            raise RigError(
                f"intensity max {value:g} does not fit {self.kind} (at most {_UINT_MAX[self.kind]:g})"
            )
        object.__setattr__(self, "max_value", value)

    def to_canonical(self, raw: np.ndarray) -> np.ndarray:
        """(N,) raw intensities -> (N,) float32 in [0, 1]; NaN and negative raw values map to 0."""
        x = np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=0.0) / self.max_value
        if self.transform == "tanh":
            x = np.tanh(np.maximum(x, 0.0))
        return np.clip(x, 0.0, 1.0).astype(np.float32)

    def from_canonical(self, x: np.ndarray) -> np.ndarray:
        """(N,) canonical intensities in [0, 1] -> raw values (float32, or rounded uint8/uint16)."""
        c = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        if self.transform == "tanh":
            c = np.arctanh(np.minimum(c, 1.0 - 1e-7))
        raw = c * self.max_value
        if self.kind == "float":
            return raw.astype(np.float32)
        return np.clip(np.rint(raw), 0, _UINT_MAX[self.kind]).astype(np.dtype(self.kind))


@dataclass(frozen=True, eq=False)
class LidarModel:
    """One LiDAR: mounting, beams, azimuth sampling, range limits, intensity, returns.

    vehicle_from_lidar: (4, 4) float64, metres. inclinations: (H,) float64 radians, strictly ascending.
    columns: range image width W (azimuth resolution 2 pi / W). azimuth_offsets: (H,) radians, one per
    beam in the order of `inclinations`, or None.
    """

    name: str
    model: str
    vehicle_from_lidar: np.ndarray
    inclinations: np.ndarray
    columns: int
    max_range: float
    min_range: float = 0.0
    intensity: IntensityEncoding = dataclasses.field(default_factory=IntensityEncoding)
    returns: int = 1
    spinning: bool = True
    azimuth_offsets: np.ndarray | None = None

    def __post_init__(self) -> None:
        where = f"lidar {self.name}"
        m = np.array(self.vehicle_from_lidar, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise RigError(f"{where}: vehicle_from_lidar must be a finite 4x4 matrix, got shape {m.shape}")
        m.setflags(write=False)
        object.__setattr__(self, "vehicle_from_lidar", m)
        inc = np.array(self.inclinations, dtype=np.float64).reshape(-1)
        if inc.size == 0 or not np.all(np.isfinite(inc)):
            raise RigError(f"{where}: inclinations must be a non-empty list of finite angles")
        if inc.size > 1 and not np.all(np.diff(inc) > 0):
            raise RigError(f"{where}: inclinations must be strictly ascending (no repeats)")
        if np.any(np.abs(inc) > math.pi / 2):
            raise RigError(f"{where}: inclinations must lie in [-90, 90] degrees")
        inc.setflags(write=False)
        object.__setattr__(self, "inclinations", inc)
        if self.azimuth_offsets is not None:
            off = np.array(self.azimuth_offsets, dtype=np.float64).reshape(-1)
            if off.shape != inc.shape or not np.all(np.isfinite(off)):
                raise RigError(
                    f"{where}: azimuth_offsets needs one finite value per beam ({inc.size}), got {off.size}"
                )
            off.setflags(write=False)
            object.__setattr__(self, "azimuth_offsets", off)
        if int(self.columns) != self.columns or self.columns < 1:
            raise RigError(f"{where}: columns must be a positive integer, got {short_repr(self.columns)}")
        object.__setattr__(self, "columns", int(self.columns))
        lo, hi = float(self.min_range), float(self.max_range)
        if not (math.isfinite(hi) and 0.0 <= lo < hi):
            raise RigError(f"{where}: ranges need 0 <= min_range < max_range, got {lo} and {hi}")
        object.__setattr__(self, "min_range", lo)
        object.__setattr__(self, "max_range", hi)
        if self.returns not in (1, 2):
            raise RigError(f"{where}: returns must be 1 or 2, got {short_repr(self.returns)}")

    @classmethod
    def uniform_inclinations(cls, count: int, min_rad: float, max_rad: float) -> np.ndarray:
        """(count,) ascending inclinations by Waymo's rule `min + (i + 0.5) / count * (max - min)`."""
        if count < 1 or not max_rad > min_rad:
            raise ValueError(
                f"uniform inclinations need count >= 1 and max > min, got {count}, {min_rad}, {max_rad}"
            )
        return min_rad + (np.arange(count, dtype=np.float64) + 0.5) / count * (max_rad - min_rad)

    # ----------------------------------------------------------------- geometry of the image
    @property
    def rows(self) -> int:
        """Range image height H (number of beams)."""
        return int(self.inclinations.size)

    @property
    def azimuth_resolution(self) -> float:
        """Radians per column, 2 pi / W."""
        return 2 * math.pi / self.columns

    @property
    def az_correction(self) -> float:
        """Yaw of the sensor in the vehicle frame, atan2(R[1, 0], R[0, 0]) (radians)."""
        return math.atan2(self.vehicle_from_lidar[1, 0], self.vehicle_from_lidar[0, 0])

    def row_inclinations(self) -> np.ndarray:
        """(H,) inclination of each range-image row, radians, highest beam first."""
        return self.inclinations[::-1].copy()

    def column_azimuths(self) -> np.ndarray:
        """(W,) sensor-frame azimuth of each column before per-beam offsets, radians."""
        w = self.columns
        return ((w - np.arange(w) - 0.5) / w * 2 - 1) * math.pi - self.az_correction

    def _row_offsets(self) -> np.ndarray:
        if self.azimuth_offsets is None:
            return np.zeros(self.rows)
        return self.azimuth_offsets[::-1]

    def beam_directions(self) -> np.ndarray:
        """(H, W, 3) float64 unit rays of every range-image pixel, sensor frame."""
        inc = self.row_inclinations()[:, None]
        az = self.column_azimuths()[None, :] + self._row_offsets()[:, None]
        return np.stack(
            [np.cos(inc) * np.cos(az), np.cos(inc) * np.sin(az), np.broadcast_to(np.sin(inc), az.shape)],
            axis=-1,
        )

    # ----------------------------------------------------------------- range image <-> points
    def range_image_to_points(
        self,
        range_image: np.ndarray,
        pixel_pose: np.ndarray | None = None,
        world_from_vehicle: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Points of the returns of an (H, W) range image (metres), as Waymo v1 extracts them.

        pixel_pose: (H, W, 4, 4) world_from_vehicle at each pixel's firing time (Waymo's TOP laser), or
        None; with it, `world_from_vehicle` (4, 4), the frame's pose, is required and each point becomes
        `inv(world_from_vehicle) @ pixel_pose[r, c] @ vehicle_from_lidar @ p_sensor`.
        Returns (points (N, 3) float64 in the vehicle frame, (rows, cols) (N,) int64 pixel indices), in
        row-major order of the pixels with range > 0.
        """
        rng = np.asarray(range_image)
        if rng.shape != (self.rows, self.columns):
            raise ValueError(
                f"lidar {self.name}: range image is {rng.shape}, expected ({self.rows}, {self.columns})"
            )
        rows, cols = np.nonzero(rng > 0)
        r = rng[rows, cols].astype(np.float64)
        inc = self.row_inclinations()[rows]
        az = self.column_azimuths()[cols] + self._row_offsets()[rows]
        cos_inc = np.cos(inc)
        p_sensor = np.stack([r * cos_inc * np.cos(az), r * cos_inc * np.sin(az), r * np.sin(inc)], axis=1)
        rot, trans = self.vehicle_from_lidar[:3, :3], self.vehicle_from_lidar[:3, 3]
        points = p_sensor @ rot.T + trans
        if pixel_pose is not None:
            if world_from_vehicle is None:
                raise ValueError(f"lidar {self.name}: a pixel pose needs the frame's world_from_vehicle")
            pose = np.asarray(pixel_pose, dtype=np.float64)
            if pose.shape != (self.rows, self.columns, 4, 4):
                raise ValueError(f"lidar {self.name}: pixel pose is {pose.shape}, expected (H, W, 4, 4)")
            vehicle_from_world = np.linalg.inv(np.asarray(world_from_vehicle, dtype=np.float64))
            # vehicle(frame time) <- world <- vehicle(pixel time), one 4x4 per point
            m = vehicle_from_world[None] @ pose[rows, cols]
            points = np.einsum("nij,nj->ni", m[:, :3, :3], points) + m[:, :3, 3]
        return points, (rows.astype(np.int64), cols.astype(np.int64))

    def points_to_range_image(
        self, points_vehicle: np.ndarray, return_index: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Scatter (N, 3) vehicle-frame points (metres) into an (H, W) float32 range image.

        Each point goes to the beam of nearest inclination and the column of nearest azimuth (after
        removing that beam's azimuth offset); a pixel keeps its nearest point. Points outside
        [min_range, max_range] or more than half a beam spacing beyond the outermost beams are dropped.
        With `return_index`, also returns (H, W) int64 indices into `points_vehicle` (-1 = empty), so
        that any per-point feature can be scattered the same way. No per-pixel pose is applied.
        """
        pts = np.asarray(points_vehicle, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"points must be (N, 3), got {pts.shape}")
        h, w = self.rows, self.columns
        lidar_from_vehicle = np.linalg.inv(self.vehicle_from_lidar)
        p = pts[:, :3] @ lidar_from_vehicle[:3, :3].T + lidar_from_vehicle[:3, 3]
        r = np.linalg.norm(p, axis=1)
        inc = np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))
        beams = self.inclinations
        hi = np.clip(np.searchsorted(beams, inc), 1, max(h - 1, 1))
        lo = hi - 1
        if h == 1:
            beam = np.zeros(len(inc), dtype=np.int64)
        else:
            beam = np.where(np.abs(inc - beams[lo]) <= np.abs(inc - beams[hi]), lo, hi)
        spacing = np.diff(beams)
        below = 0.5 * (spacing[0] if h > 1 else 2 * math.pi / w)
        above = 0.5 * (spacing[-1] if h > 1 else 2 * math.pi / w)
        keep = (r >= max(self.min_range, 1e-9)) & (r <= self.max_range)
        keep &= (inc >= beams[0] - below) & (inc <= beams[-1] + above)
        offsets = np.zeros(h) if self.azimuth_offsets is None else self.azimuth_offsets
        az = np.arctan2(p[:, 1], p[:, 0]) - offsets[beam]
        col_f = w - 0.5 - ((az + self.az_correction) / math.pi + 1) / 2 * w
        col = np.mod(np.rint(col_f).astype(np.int64), w)
        row = h - 1 - beam
        idx = np.nonzero(keep)[0]
        pix = row[idx] * w + col[idx]
        order = np.lexsort((r[idx], pix))  # by pixel, nearest first
        pix_sorted = pix[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = pix_sorted[1:] != pix_sorted[:-1]
        winners = idx[order[first]]
        image = np.zeros(h * w, dtype=np.float32)
        image[pix_sorted[first]] = r[winners]
        image = image.reshape(h, w)
        if not return_index:
            return image
        index = np.full(h * w, -1, dtype=np.int64)
        index[pix_sorted[first]] = winners
        return image, index.reshape(h, w)
