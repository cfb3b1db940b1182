"""`WaymoWriter`: write records as Waymo v1 `Frame` TFRecords (range images zlib-compressed as Waymo does)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from drivetl.data.formats._tfrecord import TFRecordWriter
from drivetl.data.formats.waymo._calib import fill_camera_calibration, fill_laser_calibration
from drivetl.data.formats.waymo._labels import fill_labels
from drivetl.data.formats.waymo._matrix import compress_matrix_float, compress_zero_matrix_int32
from drivetl.data.formats.waymo._names import CAMERA_IDS, CAMERA_NAMES, LASER_IDS, LASER_NAMES
from drivetl.data.records import FrameRecord
from drivetl.errors import DataError

if TYPE_CHECKING:
    from drivetl.calib import CameraModel, LidarModel


@dataclass(frozen=True, eq=False)
class RangeImageData:
    """One laser's range images for one frame, in Waymo's layout.

    range_image: (returns, H, W, 4) float32, returns 1 or 2; channels range (m, <= 0: no return),
        intensity (raw), elongation, is_in_nlz (1 inside a no-label zone, -1 outside), Waymo's order.
        Row 0 is the highest beam; columns follow Waymo's azimuth rule (see `drivetl.calib.LidarModel`).
    pixel_pose: (H, W, 6) float32 world_from_vehicle at each pixel's firing time as roll, pitch, yaw
        (radians, R = Rz(yaw) Ry(pitch) Rx(roll)), x, y, z (metres); TOP laser only, or None.
    """

    laser: str
    range_image: np.ndarray
    pixel_pose: np.ndarray | None = None

    def __post_init__(self) -> None:
        ri = np.asarray(self.range_image, dtype=np.float32)
        if ri.ndim == 3:
            ri = ri[None]
        if ri.ndim != 4 or ri.shape[0] not in (1, 2) or ri.shape[3] != 4:
            raise ValueError(f"laser {self.laser}: range_image must be (returns, H, W, 4), got {ri.shape}")
        object.__setattr__(self, "range_image", ri)
        if self.pixel_pose is not None:
            pose = np.asarray(self.pixel_pose, dtype=np.float32)
            if pose.shape != (*ri.shape[1:3], 6):
                raise ValueError(
                    f"laser {self.laser}: pixel_pose must be {(*ri.shape[1:3], 6)}, got {pose.shape}"
                )
            if self.laser != "TOP":
                raise ValueError(
                    f"laser {self.laser}: Waymo v1 stores a per-pixel pose for the TOP laser only"
                )
            object.__setattr__(self, "pixel_pose", pose)


def jpeg_bytes(data: bytes, encoding: str) -> bytes:
    """JPEG bytes of an encoded camera image (PNG is re-encoded at quality 95)."""
    if encoding == "jpeg":
        return bytes(data)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=95)
        return buf.getvalue()


def check_frame(
    record: FrameRecord, range_images: Mapping[str, RangeImageData], where: str
) -> tuple[dict[str, LidarModel], dict[str, CameraModel]]:
    """The rig's lidars and cameras by name, after checking that a Waymo file can hold the frame:
    Waymo sensor names only, and a calibration of the range image's size for every range image."""
    lidars = {lid.name: lid for lid in record.rig.lidars}
    cameras = {cam.name: cam for cam in record.rig.cameras}
    for name in list(lidars) + list(range_images):
        if name not in LASER_IDS:
            raise DataError(f"{where}: lidar {name!r} is not a Waymo laser name ({', '.join(LASER_NAMES)})")
    for name in list(cameras) + list(record.cameras):
        if name not in CAMERA_IDS:
            raise DataError(
                f"{where}: camera {name!r} is not a Waymo camera name ({', '.join(CAMERA_NAMES)})"
            )
    for name, data in range_images.items():
        if name not in lidars:
            raise DataError(f"{where}: range image for laser {name} but the rig has no calibration for it")
        lidar = lidars[name]
        _, height, width, _ = data.range_image.shape
        if len(lidar.inclinations) != height or int(lidar.columns) != width:
            raise DataError(
                f"{where}: laser {name} range image is {height}x{width} but the rig says "
                f"{len(lidar.inclinations)} beams x {lidar.columns} columns"
            )
    return lidars, cameras


def build_frame(
    record: FrameRecord,
    range_images: Mapping[str, RangeImageData],
    *,
    camera_projections: bool = True,
    level: int = 6,
):  # -> dataset_pb2.Frame
    """A Waymo v1 Frame proto from `record` (key, rig, images, boxes, pose) and its range images."""
    from waymo_open_dataset import dataset_pb2

    where = f"frame {record.key}"
    frame = dataset_pb2.Frame()
    frame.context.name = record.key.segment
    frame.timestamp_micros = int(record.key.timestamp_us)
    frame.pose.transform.extend(np.asarray(record.world_from_vehicle, np.float64).reshape(-1).tolist())
    lidars, cameras = check_frame(record, range_images, where)
    for name in LASER_NAMES:
        if name in lidars:
            fill_laser_calibration(frame.context.laser_calibrations.add(), lidars[name], LASER_IDS[name])
    for name in CAMERA_NAMES:
        if name in cameras:
            fill_camera_calibration(frame.context.camera_calibrations.add(), cameras[name], CAMERA_IDS[name])
    seconds = record.key.timestamp_us * 1e-6
    for name in CAMERA_NAMES:
        if name not in record.cameras:
            continue
        img = record.cameras[name]
        im = frame.images.add()
        im.name = CAMERA_IDS[name]
        im.image = jpeg_bytes(img.data, img.encoding)
        im.pose.transform.extend(np.asarray(record.world_from_vehicle, np.float64).reshape(-1).tolist())
        im.pose_timestamp = seconds
        im.camera_trigger_time = seconds
        readout = cameras[name].readout_time_s if name in cameras else 0.0
        im.camera_readout_done_time = seconds + readout
    for name in LASER_NAMES:
        if name not in range_images:
            continue
        data = range_images[name]
        _, height, width, _ = data.range_image.shape
        laser = frame.lasers.add()
        laser.name = LASER_IDS[name]
        for ret, ri in enumerate(data.range_image):
            target = laser.ri_return1 if ret == 0 else laser.ri_return2
            target.range_image_compressed = compress_matrix_float(ri, level)
            if camera_projections:
                target.camera_projection_compressed = compress_zero_matrix_int32((height, width, 6), level)
        if data.pixel_pose is not None:
            laser.ri_return1.range_image_pose_compressed = compress_matrix_float(data.pixel_pose, level)
    fill_labels(frame, record.boxes, where)
    return frame


class WaymoWriter:
    """Write frames to a Waymo v1 TFRecord, atomically (temporary file renamed on close).

    ``with WaymoWriter(path) as w: w.write(record, {"TOP": RangeImageData("TOP", ri, pose), ...})``.
    The record supplies the key (context name, timestamp), the rig (laser and camera calibrations),
    camera images (JPEG; PNG is re-encoded), boxes (laser labels; classes vehicle, pedestrian,
    cyclist, sign) and world_from_vehicle (frame pose). Its LiDAR points are not written: Waymo
    stores range images, which come in `range_images`. An exception inside the block discards
    the file.
    """

    def __init__(self, path: str | os.PathLike, *, camera_projections: bool = True, level: int = 6) -> None:
        self.path = Path(path)
        self.camera_projections = camera_projections
        self.level = level
        self._writer = TFRecordWriter(self.path)

    @property
    def count(self) -> int:
        """Frames written so far."""
        return self._writer.count

    def write(self, record: FrameRecord, range_images: Mapping[str, RangeImageData]) -> None:
        """Append one frame."""
        frame = build_frame(
            record, range_images, camera_projections=self.camera_projections, level=self.level
        )
        self._writer.write(frame.SerializeToString())

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> WaymoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.__exit__(exc_type, exc, tb)
