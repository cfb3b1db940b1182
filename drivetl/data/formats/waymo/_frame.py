"""`WaymoFrame`: one Waymo v1 Frame, decoded lazily into drivetl's types; `BaseWaymoFrame`: what a
v1 and a v2 frame share (points, features, rig, record)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from drivetl.data.formats.waymo._calib import (
    LaserCalib,
    camera_model,
    laser_calibs,
    lidar_model,
    transform_from_proto,
)
from drivetl.data.formats.waymo._decode import DecodedLaser, decode_lasers
from drivetl.data.formats.waymo._labels import boxes_from_labels
from drivetl.data.formats.waymo._names import (
    DEFAULT_LASER_SHAPE,
    FEATURE_COLUMNS,
    LASER_IDS,
    LASER_NAMES,
    RECORD_COLUMNS,
    camera_name,
    laser_name,
)
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.errors import DataError

if TYPE_CHECKING:
    from drivetl.calib import CameraModel, SensorRig
    from drivetl.data.formats.waymo._writer import RangeImageData


class BaseWaymoFrame:
    """What every Waymo frame offers, whichever release it was read from.

    A subclass provides `key`, `world_from_vehicle`, `laser_calibrations`, `images`,
    `image_poses`, `cameras()`, `boxes` and `_decode()` ({(laser, return): DecodedLaser}); this
    class builds the points, features, rig and record from them. Every point array is float32 in
    the vehicle frame of this frame (x forward, y left, z up, metres), in the order of Waymo's own
    converter: for each return (1, then 2), for each laser in LaserName order (TOP, FRONT,
    SIDE_LEFT, SIDE_RIGHT, REAR), the range image pixels with range > 0 in row-major order.
    """

    where: str
    laser_calibrations: dict[str, LaserCalib]
    key: FrameKey
    world_from_vehicle: np.ndarray
    images: Mapping[str, CameraImage]
    image_poses: Mapping[str, np.ndarray]
    boxes: Boxes

    def _decode(self) -> dict[tuple[str, int], DecodedLaser]:
        raise NotImplementedError

    def cameras(self) -> tuple[CameraModel, ...]:
        """Camera models from the frame's calibrations, in CameraName order."""
        raise NotImplementedError

    @property
    def lasers(self) -> tuple[str, ...]:
        """Names of the lasers with range images in this frame, in LaserName order."""
        names = {name for name, _ in self._decode()}
        return tuple(n for n in LASER_NAMES if n in names)

    # ------------------------------------------------------------------ points
    def _parts(self, laser: str | None, return_index: int | None) -> list[tuple[str, int, DecodedLaser]]:
        if laser is not None and laser not in LASER_IDS:
            raise ValueError(f"laser must be one of {LASER_NAMES} or None, got {laser!r}")
        if return_index not in (None, 1, 2):
            raise ValueError(f"return_index must be 1, 2 or None, got {return_index!r}")
        decoded = self._decode()
        returns = (1, 2) if return_index is None else (return_index,)
        lasers = LASER_NAMES if laser is None else (laser,)
        return [(n, r, decoded[(n, r)]) for r in returns for n in lasers if (n, r) in decoded]

    def points(self, laser: str | None = None, return_index: int | None = None) -> np.ndarray:
        """(N, 3) float32 x, y, z in the vehicle frame (metres), Waymo's order (see the class docstring).

        laser: one of TOP, FRONT, SIDE_LEFT, SIDE_RIGHT, REAR, or None for all. return_index: 1, 2 or
        None for both (all of return 1, then all of return 2).
        """
        parts = [d.xyz for _, _, d in self._parts(laser, return_index)]
        return np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)

    def point_features(self, laser: str | None = None, return_index: int | None = None) -> np.ndarray:
        """(N, 9) float32, columns `FEATURE_COLUMNS`, same rows as `points`:
        x, y, z (vehicle frame, m), intensity (raw), elongation (raw), range (m, from the sensor),
        no_label_zone (1.0 inside a no-label zone, else 0.0), return_index (1 or 2), laser_id (1..5)."""
        parts = self._parts(laser, return_index)
        n = sum(len(d.xyz) for _, _, d in parts)
        out = np.empty((n, len(FEATURE_COLUMNS)), np.float32)
        start = 0
        for name, ret, d in parts:
            end = start + len(d.xyz)
            out[start:end, 0:3] = d.xyz
            out[start:end, 3] = d.values[:, 1]
            out[start:end, 4] = d.values[:, 2]
            out[start:end, 5] = d.values[:, 0]
            out[start:end, 6] = d.values[:, 3] > 0
            out[start:end, 7] = ret
            out[start:end, 8] = LASER_IDS[name]
            start = end
        return out

    def range_image_shape(self, laser: str) -> tuple[int, int]:
        """(rows, columns) of `laser`'s range image (Waymo's default when the frame has none)."""
        decoded = self._decode()
        for ret in (1, 2):
            if (laser, ret) in decoded:
                return decoded[(laser, ret)].shape
        return DEFAULT_LASER_SHAPE.get(laser, (64, 2650))

    # ------------------------------------------------------------------ rig and record
    @functools.cached_property
    def rig(self) -> SensorRig:
        """A `SensorRig` built from the frame's laser and camera calibrations (name "waymo")."""
        from drivetl.calib import SensorRig

        lidars = tuple(
            lidar_model(self.laser_calibrations[n], self.range_image_shape(n), self.where)
            for n in LASER_NAMES
            if n in self.laser_calibrations
        )
        return SensorRig(
            name="waymo", lidars=lidars, cameras=self.cameras(), ground=0.0, source_path=self.where
        )

    def to_record(self, *, drop_no_label_zone: bool = False) -> FrameRecord:
        """This frame as a `FrameRecord`: one `LidarPoints` per laser (both returns, vehicle frame, raw
        intensity, columns `RECORD_COLUMNS`), JPEG images, the rig, boxes and the frame pose."""
        lidars = {}
        for name in self.lasers:
            feats = self.point_features(name)
            if drop_no_label_zone:
                feats = feats[feats[:, FEATURE_COLUMNS.index("no_label_zone")] == 0]
            cols = [FEATURE_COLUMNS.index(c) for c in RECORD_COLUMNS]
            lidars[name] = LidarPoints(name, np.ascontiguousarray(feats[:, cols]), RECORD_COLUMNS, "vehicle")
        return FrameRecord(
            key=self.key,
            rig=self.rig,
            lidars=lidars,
            cameras=dict(self.images),
            boxes=self.boxes,
            world_from_vehicle=self.world_from_vehicle,
        )

    def __repr__(self) -> str:
        return f"WaymoFrame({self.key}, lasers={list(self.lasers)}, cameras={list(self.images)})"


class WaymoFrame(BaseWaymoFrame):
    """One Frame of a Waymo v1 TFRecord.

    Points are decoded on first use (all lasers and both returns at once, in parallel threads) and
    cached; see `BaseWaymoFrame` for the frame, units and order of every point array.
    """

    def __init__(self, proto: Any, *, where: str, threads: int = 1) -> None:
        self.proto = proto
        self.where = where
        self.threads = threads
        self.laser_calibrations = laser_calibs(proto.context, where)
        for laser in proto.lasers:
            if not (laser.ri_return1.range_image_compressed or laser.ri_return2.range_image_compressed):
                continue  # an empty entry (Waymo's own files have them when range images were removed)
            name = laser_name(int(laser.name), where)
            if name not in self.laser_calibrations:
                raise DataError(
                    f"{where}: laser {name} has range images but the frame's context has no calibration "
                    "for it "
                    f"(it has {sorted(self.laser_calibrations) or 'none'}); the file was written incompletely"
                )
        self._decoded: dict[tuple[str, int], DecodedLaser] | None = None

    # ------------------------------------------------------------------ identity and pose
    @functools.cached_property
    def key(self) -> FrameKey:
        """Segment (context name) and timestamp in microseconds."""
        return FrameKey(self.proto.context.name, int(self.proto.timestamp_micros))

    @functools.cached_property
    def world_from_vehicle(self) -> np.ndarray:
        """(4, 4) float64 frame pose (identity when the frame has none)."""
        return transform_from_proto(self.proto.pose.transform, f"{self.where}: frame pose")

    def _decode(self) -> dict[tuple[str, int], DecodedLaser]:
        if self._decoded is None:
            self._decoded = decode_lasers(
                self.proto, self.laser_calibrations, self.world_from_vehicle, self.where, self.threads
            )
        return self._decoded

    def range_images(self) -> dict[str, RangeImageData]:
        """Laser name -> its range images as stored (both returns, the TOP pixel pose), inflated: what
        `WaymoWriter` or `WaymoV2Writer` takes to write this frame again (v1 -> v2 conversion)."""
        from drivetl.data.formats.waymo._decode import _inflate
        from drivetl.data.formats.waymo._writer import RangeImageData

        out = {}
        for laser in self.proto.lasers:
            returns = [r for r in (laser.ri_return1, laser.ri_return2) if r.range_image_compressed]
            if not returns:
                continue
            name = laser_name(int(laser.name), self.where)
            where = f"{self.where}: laser {name}"
            images = [_inflate(r.range_image_compressed, where) for r in returns]
            blob = laser.ri_return1.range_image_pose_compressed
            pose = _inflate(blob, f"{where} pixel pose") if blob and name == "TOP" else None
            try:
                out[name] = RangeImageData(name, np.stack(images), pose)
            except ValueError as exc:
                raise DataError(f"{where}: {exc}") from None
        return out

    # ------------------------------------------------------------------ cameras, calibration, labels
    @functools.cached_property
    def images(self) -> Mapping[str, CameraImage]:
        """Camera name -> `CameraImage` (JPEG bytes, decoded lazily), in the frame's order."""
        return {
            camera_name(int(im.name), self.where): CameraImage(
                camera_name(int(im.name), self.where), bytes(im.image), "jpeg", self.where
            )
            for im in self.proto.images
        }

    @functools.cached_property
    def image_poses(self) -> Mapping[str, np.ndarray]:
        """Camera name -> (4, 4) float64 world_from_vehicle when the image was taken (else the frame pose)."""
        return {
            camera_name(int(im.name), self.where): (
                transform_from_proto(im.pose.transform, f"{self.where}: image pose")
                if len(im.pose.transform)
                else self.world_from_vehicle
            )
            for im in self.proto.images
        }

    def cameras(self) -> tuple[CameraModel, ...]:
        """Camera models from the frame's calibrations, in CameraName order."""
        images = {int(im.name): im for im in self.proto.images}
        cals = sorted(self.proto.context.camera_calibrations, key=lambda c: int(c.name))
        return tuple(camera_model(c, images.get(int(c.name)), self.where) for c in cals)

    @functools.cached_property
    def boxes(self) -> Boxes:
        """Laser labels as `Boxes` in the vehicle frame (TYPE_UNKNOWN labels dropped)."""
        return boxes_from_labels(self.proto.laser_labels)[0]
