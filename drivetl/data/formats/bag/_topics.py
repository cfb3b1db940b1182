"""What to read from a log: the LiDAR and camera topics, the names their sensors get in the rig."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivetl.errors import DataError

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF = "tf2_msgs/msg/TFMessage"
ODOMETRY = "nav_msgs/msg/Odometry"


@dataclass(frozen=True)
class Topic:
    """A sensor topic and the name its sensor gets in the rig (a path component: letters, digits, _-.)."""

    topic: str
    name: str


@dataclass(frozen=True)
class LogSelection:
    """The topics of one import: one LiDAR, any cameras, the vehicle's tf frame, the tf topics."""

    lidar: Topic
    cameras: tuple[Topic, ...] = ()
    vehicle_frame: str = "base_link"
    tf_static: str = "/tf_static"
    tf: str = "/tf"
    odometry: str | None = None
    field_map: dict[str, str] = field(default_factory=dict)


def sensor_name(topic: str) -> str:
    """A rig sensor name from a topic: '/lidar/top/points' -> 'lidar_top_points'."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", topic.strip("/")).strip("_")
    return name or "sensor"


def parse_topic(spec: str, default_name: str | None = None) -> Topic:
    """`TOPIC` or `TOPIC=NAME` -> Topic (NAME defaults to `default_name`, else one made from the topic)."""
    topic, sep, name = spec.partition("=")
    topic = topic.strip()
    if not topic.startswith("/"):
        topic = "/" + topic
    name = name.strip() if sep else (default_name or sensor_name(topic))
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name in (".", ".."):
        raise DataError(f"sensor name {name!r} (for {topic}) must be letters, digits, '_', '-' or '.'")
    return Topic(topic, name)


def camera_info_topic(image_topic: str, topics: dict[str, str]) -> str:
    """The CameraInfo topic beside an image topic ('/cam/image_raw[/compressed]' -> '/cam/camera_info')."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    ns = base.rsplit("/", 1)[0]
    candidate = f"{ns}/camera_info"
    if topics.get(candidate) == CAMERA_INFO:
        return candidate
    near = [t for t, ty in topics.items() if ty == CAMERA_INFO and t.startswith(ns.rsplit("/", 1)[0] + "/")]
    if len(near) == 1:
        return near[0]
    return candidate


def check_topics(selection: LogSelection, topics: dict[str, str], where: str) -> dict[str, str]:
    """Check the selected topics exist with the right types; returns camera topic -> CameraInfo topic."""

    def listing(types: Sequence[str]) -> str:
        found = sorted(t for t, ty in topics.items() if ty in types)
        return ", ".join(found[:8]) or "none"

    lt = selection.lidar.topic
    if topics.get(lt) != POINTCLOUD2:
        raise DataError(
            f"{where}: topic {lt} is {'absent' if lt not in topics else topics[lt]}, not a PointCloud2; "
            f"PointCloud2 topics in the log: {listing([POINTCLOUD2])}"
        )
    infos = {}
    for cam in selection.cameras:
        if topics.get(cam.topic) not in (IMAGE, COMPRESSED):
            raise DataError(
                f"{where}: camera topic {cam.topic} is {topics.get(cam.topic, 'absent')}; "
                f"image topics in the log: {listing([IMAGE, COMPRESSED])}"
            )
        info = camera_info_topic(cam.topic, topics)
        if topics.get(info) != CAMERA_INFO:
            raise DataError(
                f"{where}: no CameraInfo for {cam.topic} (looked for {info}); CameraInfo topics: "
                f"{listing([CAMERA_INFO])}"
            )
        infos[cam.topic] = info
    return infos
