"""Frame records: what every reader yields and every writer takes (hop 1 of DESIGN.md's data flow).

Readers never normalize. A `FrameRecord` holds what the source recorded: LiDAR points in the frame
the source stores them in (`LidarPoints.frame`), raw intensity as the rig declares it, encoded
camera images, and boxes in the vehicle frame. `drivetl.data.canonicalize` turns a record into a
training `Sample` with one explicit, rig-driven step.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from drivetl.calib.rig_vector import RIG_VECTOR_DIM
from drivetl.errors import DataError, short_repr

if TYPE_CHECKING:
    from drivetl.calib import SensorRig

#: Canonical class names (DESIGN.md). Every source maps its own names onto these in its reader.
CLASSES: tuple[str, ...] = ("vehicle", "pedestrian", "cyclist", "sign")

#: Point feature columns, in this order: x, y, z, intensity, then the optional ones.
POINT_COLUMNS: tuple[str, ...] = (
    "x", "y", "z", "intensity", "elongation", "time", "return_index", "laser_id",
)


@dataclass(frozen=True, order=True)
class FrameKey:
    """Identifies a frame: the segment (log, drive, scene) and the frame's timestamp in microseconds."""

    segment: str
    timestamp_us: int

    def __str__(self) -> str:
        return f"{self.segment}@{self.timestamp_us}"


@dataclass(frozen=True, eq=False)
class LidarPoints:
    """One LiDAR's points of one frame.

    points: (N, C) float32; columns named by `columns`, starting with x, y, z, intensity (metres,
        in `frame`: "vehicle" or "sensor"); intensity raw, in the encoding the rig declares.
    """

    sensor: str
    points: np.ndarray
    columns: tuple[str, ...] = ("x", "y", "z", "intensity")
    frame: Literal["vehicle", "sensor"] = "vehicle"

    def __post_init__(self) -> None:
        pts = self.points
        if pts.ndim != 2 or pts.shape[1] != len(self.columns):
            raise ValueError(
                f"lidar {self.sensor}: points shape {pts.shape} does not match columns {self.columns}"
            )
        if tuple(self.columns[:4]) != POINT_COLUMNS[:4]:
            raise ValueError(
                f"lidar {self.sensor}: columns must start with x, y, z, intensity: {self.columns}"
            )
        if pts.dtype != np.float32:
            object.__setattr__(self, "points", pts.astype(np.float32))

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def column(self, name: str) -> np.ndarray:
        """The (N,) column `name`; KeyError naming the available columns when absent."""
        try:
            return self.points[:, self.columns.index(name)]
        except ValueError:
            raise KeyError(f"lidar {self.sensor}: no column {name!r} (has {self.columns})") from None


@dataclass(frozen=True, eq=False)
class CameraImage:
    """One camera's image of one frame, kept encoded (JPEG/PNG bytes) and decoded lazily.

    origin: where the bytes come from (a file path, a record), named in error messages; "" unknown.
    """

    sensor: str
    data: bytes
    encoding: Literal["jpeg", "png"] = "jpeg"
    origin: str = ""

    def _where(self) -> str:
        return f"{self.origin}: camera {self.sensor}" if self.origin else f"camera {self.sensor}"

    def _fault(self, what: str, exc: Exception) -> DataError:
        from PIL import UnidentifiedImageError

        why = "not an image PIL can identify" if isinstance(exc, UnidentifiedImageError) else str(exc)
        return DataError(f"{self._where()}: {what.format(self.encoding)} ({short_repr(why, 120)})")

    def decode(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB; DataError (naming the camera) for bytes that are no decodable image."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(self.data)) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise self._fault("undecodable {} image", exc) from None

    def size(self) -> tuple[int, int]:
        """(width, height) read from the encoded header, without decoding the pixels."""
        from PIL import Image

        try:
            with Image.open(io.BytesIO(self.data)) as im:
                return int(im.width), int(im.height)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise self._fault("unreadable {} image header", exc) from None


@dataclass(frozen=True, eq=False)
class Boxes:
    """3D boxes of one frame in the vehicle frame (DESIGN.md convention).

    boxes: (M, 7) float64 `x, y, z, length, width, height, heading`; centre in metres, heading in
        radians about +z from +x, in (-pi, pi].
    classes: M canonical class names. ids: M track ids ("" when unknown).
    num_points: (M,) int32 LiDAR points inside the box (-1 when unknown).
    difficulty: (M,) int8 (0 unknown, 1 or 2 as Waymo's LEVEL_1/LEVEL_2).
    speed: (M, 2) float32 velocity x, y in the vehicle frame, m/s (NaN when unknown).
    """

    boxes: np.ndarray
    classes: tuple[str, ...]
    ids: tuple[str, ...] = ()
    num_points: np.ndarray | None = None
    difficulty: np.ndarray | None = None
    speed: np.ndarray | None = None

    def __post_init__(self) -> None:
        b = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 7)
        object.__setattr__(self, "boxes", b)
        m = b.shape[0]
        if len(self.classes) != m:
            raise ValueError(f"boxes: {m} boxes but {len(self.classes)} classes")
        if not self.ids:
            object.__setattr__(self, "ids", ("",) * m)
        elif len(self.ids) != m:
            raise ValueError(f"boxes: {m} boxes but {len(self.ids)} ids")
        defaults = {
            "num_points": (np.full(m, -1, np.int32), np.int32, (m,)),
            "difficulty": (np.zeros(m, np.int8), np.int8, (m,)),
            "speed": (np.full((m, 2), np.nan, np.float32), np.float32, (m, 2)),
        }
        for name, (default, dtype, shape) in defaults.items():
            value = getattr(self, name)
            value = default if value is None else np.asarray(value, dtype=dtype).reshape(shape)
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> Boxes:
        """No boxes."""
        return Boxes(np.zeros((0, 7)), ())

    def select(self, mask: np.ndarray) -> Boxes:
        """The boxes where `mask` (bool (M,) or integer indices) selects."""
        idx = np.arange(len(self))[mask]
        return Boxes(
            self.boxes[idx], tuple(self.classes[i] for i in idx), tuple(self.ids[i] for i in idx),
            self.num_points[idx], self.difficulty[idx], self.speed[idx],
        )


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


def _reduce(obj: Any) -> tuple:
    """Pickle a record through its constructor, its read-only mappings as plain dicts (a mapping
    proxy cannot be pickled, and DataLoader worker processes send samples and records)."""
    values = (getattr(obj, f.name) for f in fields(obj))
    return (type(obj), tuple(dict(v) if isinstance(v, MappingProxyType) else v for v in values))


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """Everything one source frame holds, as recorded.

    world_from_vehicle: (4, 4) float64 pose of the vehicle frame in the world frame (identity if unknown).
    """

    key: FrameKey
    rig: SensorRig
    lidars: Mapping[str, LidarPoints] = field(default_factory=dict)
    cameras: Mapping[str, CameraImage] = field(default_factory=dict)
    boxes: Boxes = field(default_factory=Boxes.empty)
    world_from_vehicle: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        object.__setattr__(self, "lidars", _frozen(self.lidars))
        object.__setattr__(self, "cameras", _frozen(self.cameras))
        pose = np.asarray(self.world_from_vehicle, dtype=np.float64)
        if pose.shape != (4, 4):
            raise ValueError(f"frame {self.key}: world_from_vehicle must be 4x4, got {pose.shape}")
        object.__setattr__(self, "world_from_vehicle", pose)

    def __reduce__(self) -> tuple:
        return _reduce(self)


@dataclass(frozen=True, eq=False)
class Sample:
    """A canonicalized (and possibly augmented) frame, ready to collate (hop 2 of the data flow).

    points: (N, C) float32 in the canonical vehicle frame (x forward, y left, z up, metres, ground at
        z = 0), columns named by `columns` (x, y, z, intensity first; intensity canonical in [0, 1]).
    boxes: boxes in the same canonical frame.
    images: camera name -> (H, W, 3) uint8 RGB, one entry per camera in `cameras` that has an image.
    cameras: camera models whose `vehicle_from_camera` is expressed in the canonical frame (so
        projecting `points` with them lands on `images`).
    rig_name: the recording rig's name. rig_vector: (`RIG_VECTOR_DIM`,) float32 descriptor of that
        rig (`drivetl.calib.rig_vector`); None for a hand-made sample without a rig (zeros in a batch).
    ground_z: metres, the z of the ground in the recording's vehicle frame that canonicalization
        subtracted (``vehicle = canonical + (0, 0, ground_z)``); predictions go back to the vehicle
        frame with it.
    """

    key: FrameKey
    points: np.ndarray
    columns: tuple[str, ...]
    boxes: Boxes
    images: Mapping[str, np.ndarray] = field(default_factory=dict)
    cameras: tuple = ()
    rig_name: str = ""
    rig_vector: np.ndarray | None = None
    ground_z: float = 0.0

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != len(self.columns):
            raise ValueError(f"sample {self.key}: points {self.points.shape} vs columns {self.columns}")
        if self.rig_vector is not None and np.shape(self.rig_vector) != (RIG_VECTOR_DIM,):
            raise ValueError(
                f"sample {self.key}: rig_vector of shape {np.shape(self.rig_vector)}, "
                f"expected ({RIG_VECTOR_DIM},)"
            )
        if self.points.dtype != np.float32:
            object.__setattr__(self, "points", self.points.astype(np.float32))
        object.__setattr__(self, "images", _frozen(self.images))

    def __reduce__(self) -> tuple:
        return _reduce(self)
