"""Write drivetl frames as a recorded log, the way a car's drivers would have published them.

Containers (`container`): `ros1` (a .bag, rosbags' writer), `ros2-sqlite3` and `ros2-mcap` (ROS 2 bag
folders, rosbags' writer), `mcap-ros1` and `mcap-cdr` (a standalone .mcap, the mcap library's writer,
ROS 1 or CDR messages). What is published per frame, for a rig and its records:

- `/tf_static` once: `vehicle_frame -> <lidar>` (vehicle_from_lidar), `vehicle_frame -> <camera>_link`
  (the Waymo camera frame) and `<camera>_link -> <camera>_optical` (CAMERA_FROM_OPTICAL);
- `/tf`: `odom -> vehicle_frame` (the frame's world_from_vehicle);
- the LiDAR's points in its own frame as PointCloud2 in a driver's layout (`LAYOUTS`), with the ring
  (nearest beam of the rig, 0 = lowest) and a per-point time from the azimuth over a 0.1 s sweep;
- per camera its image (CompressedImage with the record's JPEG/PNG bytes, or a raw rgb8 Image) and
  its CameraInfo, both in the optical frame.

It exists to make real-format logs for tests, benchmarks and demos from simulated frames.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from drivetl.calib.beams import nearest_beam, point_inclinations
from drivetl.calib.camera import CAMERA_FROM_OPTICAL
from drivetl.data.formats.bag._messages import MessageFactory
from drivetl.data.records import FrameRecord

CONTAINERS = ("ros1", "ros2-sqlite3", "ros2-mcap", "mcap-ros1", "mcap-cdr")


class LogWriter:
    """Write serialized messages into one of `CONTAINERS`; a context manager."""

    def __init__(self, path: str | os.PathLike, container: str) -> None:
        if container not in CONTAINERS:
            raise ValueError(f"container {container!r} is not one of {CONTAINERS}")
        self.path = Path(path)
        self.container = container
        self.factory = MessageFactory("ros1" if container in ("ros1", "mcap-ros1") else "cdr")
        self._writer: Any = None
        self._file: Any = None
        self._conns: dict[str, Any] = {}

    def __enter__(self) -> LogWriter:
        if self.container == "ros1":
            from rosbags.rosbag1 import Writer

            self._writer = Writer(self.path)
            self._writer.open()
        elif self.container.startswith("ros2"):
            from rosbags.rosbag2 import StoragePlugin, Writer

            plugin = StoragePlugin.MCAP if self.container == "ros2-mcap" else StoragePlugin.SQLITE3
            self._writer = Writer(self.path, version=9, storage_plugin=plugin)
            self._writer.open()
        else:
            from mcap.writer import Writer

            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__
            self._writer = Writer(self._file)
            self._writer.start(profile="ros1" if self.container == "mcap-ros1" else "ros2", library="drivetl")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._writer.finish()
            self._file.close()
        else:
            self._writer.close()

    def _connection(self, topic: str, msgtype: str) -> Any:
        if topic in self._conns:
            return self._conns[topic]
        store = self.factory.store
        if self.container.startswith("mcap"):
            ros1 = self.container == "mcap-ros1"
            text, _ = store.generate_msgdef(msgtype, ros_version=1 if ros1 else 2)
            name = msgtype.replace("/msg/", "/") if ros1 else msgtype
            sid = self._writer.register_schema(name, "ros1msg" if ros1 else "ros2msg", text.encode())
            conn = self._writer.register_channel(topic, "ros1" if ros1 else "cdr", sid)
        else:
            conn = self._writer.add_connection(topic, msgtype, typestore=store)
        self._conns[topic] = conn
        return conn

    def write(self, topic: str, msgtype: str, t_ns: int, msg: Any) -> None:
        """Serialize `msg` and write it on `topic` at log time `t_ns`."""
        data = self.factory.serialize(msg, msgtype)
        conn = self._connection(topic, msgtype)
        if self.container.startswith("mcap"):
            self._writer.add_message(conn, log_time=t_ns, data=data, publish_time=t_ns)
        else:
            self._writer.write(conn, t_ns, data)


def _lidar_columns(record: FrameRecord, lidar: Any, t_ns: int) -> dict[str, np.ndarray]:
    lp = record.lidars[lidar.name]
    xyz = lp.points[:, :3].astype(np.float64)
    if lp.frame == "vehicle":
        m = np.linalg.inv(lidar.vehicle_from_lidar)
        xyz = xyz @ m[:3, :3].T + m[:3, 3]
    ring, _ = nearest_beam(point_inclinations(xyz), lidar.inclinations)
    az = np.arctan2(xyz[:, 1], xyz[:, 0])
    rel = ((np.pi - az) / (2 * np.pi) * 0.1).astype(np.float64)  # a 0.1 s sweep, clockwise from behind
    return {
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        "intensity": lp.points[:, 3],
        "ring": ring,
        "time": rel,
        "t": np.rint(rel * 1e9),
        "timestamp": t_ns * 1e-9 + rel,
        "reflectivity": np.zeros(len(xyz)),
        "ambient": np.zeros(len(xyz)),
        "range": np.rint(np.linalg.norm(xyz, axis=1) * 1000),
    }


def write_log(
    path: str | os.PathLike,
    rig: Any,
    records: Iterable[FrameRecord],
    *,
    container: str = "ros1",
    layout: str = "hesai",
    vehicle_frame: str = "base_link",
    raw_images: bool = False,
    lidar_topics: dict[str, str] | None = None,
    camera_topics: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write `records` of `rig` as a log; returns {lidar_topics, camera_topics, frames} for importing.

    Topics default to `/<name lower>/points` per LiDAR and `/<name lower>/image_raw` (raw) or
    `/<name lower>/image_raw/compressed` per camera, with `/<name lower>/camera_info` beside it.
    """
    lidar_topics = lidar_topics or {ld.name: f"/{ld.name.lower()}/points" for ld in rig.lidars}
    suffix = "image_raw" if raw_images else "image_raw/compressed"
    camera_topics = camera_topics or {c.name: f"/{c.name.lower()}/{suffix}" for c in rig.cameras}
    frames = 0
    with LogWriter(path, container) as w:
        f = w.factory
        static_done = False
        for record in records:
            t_ns = int(record.key.timestamp_us) * 1000
            if not static_done:
                tfs = [
                    f.transform(t_ns, vehicle_frame, ld.name.lower(), ld.vehicle_from_lidar)
                    for ld in rig.lidars
                ]
                for cam in rig.cameras:
                    link, optical = f"{cam.name.lower()}_link", f"{cam.name.lower()}_optical"
                    tfs.append(f.transform(t_ns, vehicle_frame, link, cam.vehicle_from_camera))
                    tfs.append(f.transform(t_ns, link, optical, CAMERA_FROM_OPTICAL))
                w.write("/tf_static", "tf2_msgs/msg/TFMessage", t_ns, f.tf_message(tfs))
                static_done = True
            pose = f.transform(t_ns, "odom", vehicle_frame, record.world_from_vehicle)
            w.write("/tf", "tf2_msgs/msg/TFMessage", t_ns, f.tf_message([pose]))
            for ld in rig.lidars:
                if ld.name not in record.lidars:
                    continue
                cols = _lidar_columns(record, ld, t_ns)
                msg = f.pointcloud2(t_ns, ld.name.lower(), cols, layout)
                w.write(lidar_topics[ld.name], "sensor_msgs/msg/PointCloud2", t_ns, msg)
            for cam in rig.cameras:
                if cam.name not in record.cameras:
                    continue
                optical = f"{cam.name.lower()}_optical"
                img = record.cameras[cam.name]
                topic = camera_topics[cam.name]
                if raw_images:
                    from PIL import Image

                    rgb = np.asarray(Image.open(io.BytesIO(img.data)).convert("RGB"))
                    w.write(topic, "sensor_msgs/msg/Image", t_ns, f.raw_image(t_ns, optical, rgb))
                else:
                    msg = f.compressed_image(t_ns, optical, img.data, img.encoding)
                    w.write(topic, "sensor_msgs/msg/CompressedImage", t_ns, msg)
                info_topic = topic.rsplit("/", 2 if topic.endswith("/compressed") else 1)[0] + "/camera_info"
                w.write(info_topic, "sensor_msgs/msg/CameraInfo", t_ns, f.camera_info(t_ns, optical, cam))
            frames += 1
    return {"lidar_topics": lidar_topics, "camera_topics": camera_topics, "frames": frames}
