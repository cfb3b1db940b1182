"""Build ROS messages (ROS 1 or ROS 2 flavour) from drivetl data, for writing logs.

rosbags' typestores hold the message classes: ROS 1 (noetic) spells CameraInfo's arrays `K`, `D`,
headers carry `seq`; ROS 2 (humble) spells them `k`, `d` and has no `seq`. `MessageFactory` hides
that: fields are given in lower case and matched to the store's own names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from drivetl.calib.se3 import quaternion_wxyz_from_rotation
from drivetl.data.formats.bag._pointcloud2 import encode_pointcloud2_fields

#: Point layouts real drivers publish: column -> numpy kind, plus trailing padding bytes.
LAYOUTS: dict[str, tuple[dict[str, str], int]] = {
    # Hesai ROS driver: absolute float64 timestamp per point, uint16 ring.
    "hesai": ({"x": "f4", "y": "f4", "z": "f4", "intensity": "f4", "timestamp": "f8", "ring": "u2"}, 6),
    # Velodyne ROS driver (velodyne_pointcloud): float32 time after the stamp, uint16 ring.
    "velodyne": ({"x": "f4", "y": "f4", "z": "f4", "intensity": "f4", "ring": "u2", "time": "f4"}, 0),
    # Ouster ROS driver: uint32 nanoseconds t, reflectivity, uint16 ring, ambient, range.
    "ouster": (
        {
            "x": "f4",
            "y": "f4",
            "z": "f4",
            "intensity": "f4",
            "t": "u4",
            "reflectivity": "u2",
            "ring": "u2",
            "ambient": "u2",
            "range": "u4",
        },
        4,
    ),
}


#: tf2_msgs/TFMessage's definition (it has one field).
_TF_MESSAGE = "geometry_msgs/TransformStamped[] transforms"


class MessageFactory:
    """Message objects of one typestore (`ros1`: ROS 1 noetic, `cdr`: ROS 2 humble)."""

    def __init__(self, encoding: str) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.encoding = encoding
        self.store = get_typestore(Stores.ROS1_NOETIC if encoding == "ros1" else Stores.ROS2_HUMBLE)
        if "tf2_msgs/msg/TFMessage" not in self.store.types:  # rosbags' noetic store lacks tf2_msgs
            from rosbags.typesys import get_types_from_msg

            self.store.register(get_types_from_msg(_TF_MESSAGE, "tf2_msgs/msg/TFMessage"))

    def make(self, msgtype: str, **fields: Any) -> Any:
        """A `msgtype` message with `fields` given in lower case (matched to the store's spelling)."""
        cls = self.store.types[msgtype]
        names = [f[0] for f in self.store.fielddefs[msgtype][1]]
        lower = {n.lower(): n for n in names}
        kwargs = {lower[k]: v for k, v in fields.items()}
        if "seq" in lower and "seq" not in fields:
            kwargs["seq"] = 0
        return cls(**kwargs)

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        """The message's bytes in this factory's encoding."""
        if self.encoding == "ros1":
            return bytes(self.store.serialize_ros1(msg, msgtype))
        return bytes(self.store.serialize_cdr(msg, msgtype))

    def header(self, t_ns: int, frame_id: str) -> Any:
        """std_msgs/Header at `t_ns` nanoseconds."""
        stamp = self.make(
            "builtin_interfaces/msg/Time", sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000
        )
        return self.make("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)

    def pointcloud2(
        self,
        t_ns: int,
        frame_id: str,
        columns: Mapping[str, np.ndarray],
        layout: str,
        big_endian: bool = False,
    ) -> Any:
        """An unorganized PointCloud2 of `columns` packed in one of `LAYOUTS`."""
        kinds, pad = LAYOUTS[layout]
        cols = {k: np.asarray(columns[k]) for k in kinds}
        fields, step, data = encode_pointcloud2_fields(cols, kinds, big_endian=big_endian, pad=pad)
        n = len(cols["x"])
        pfs = [
            self.make("sensor_msgs/msg/PointField", name=a, offset=b, datatype=c, count=d)
            for a, b, c, d in fields
        ]
        return self.make(
            "sensor_msgs/msg/PointCloud2",
            header=self.header(t_ns, frame_id),
            height=1,
            width=n,
            fields=pfs,
            is_bigendian=big_endian,
            point_step=step,
            row_step=step * n,
            data=np.frombuffer(data, np.uint8),
            is_dense=True,
        )

    def transform(self, t_ns: int, parent: str, child: str, parent_from_child: np.ndarray) -> Any:
        """geometry_msgs/TransformStamped of a (4, 4) `parent_from_child`."""
        m = np.asarray(parent_from_child, dtype=np.float64)
        w, x, y, z = quaternion_wxyz_from_rotation(m[:3, :3])
        tr = self.make("geometry_msgs/msg/Vector3", x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3]))
        q = self.make("geometry_msgs/msg/Quaternion", x=float(x), y=float(y), z=float(z), w=float(w))
        return self.make(
            "geometry_msgs/msg/TransformStamped",
            header=self.header(t_ns, parent),
            child_frame_id=child,
            transform=self.make("geometry_msgs/msg/Transform", translation=tr, rotation=q),
        )

    def tf_message(self, transforms: list[Any]) -> Any:
        """tf2_msgs/TFMessage of TransformStamped messages."""
        return self.make("tf2_msgs/msg/TFMessage", transforms=transforms)

    def camera_info(self, t_ns: int, frame_id: str, cam: Any) -> Any:
        """sensor_msgs/CameraInfo (plumb_bob) of a drivetl CameraModel."""
        k = np.array([cam.fx, 0, cam.cx, 0, cam.fy, cam.cy, 0, 0, 1], dtype=np.float64)
        p = np.array([cam.fx, 0, cam.cx, 0, 0, cam.fy, cam.cy, 0, 0, 0, 1, 0], dtype=np.float64)
        roi = self.make(
            "sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return self.make(
            "sensor_msgs/msg/CameraInfo",
            header=self.header(t_ns, frame_id),
            height=cam.height,
            width=cam.width,
            distortion_model="plumb_bob",
            d=np.array([cam.k1, cam.k2, cam.p1, cam.p2, cam.k3], dtype=np.float64),
            k=k,
            r=np.eye(3).reshape(-1),
            p=p,
            binning_x=0,
            binning_y=0,
            roi=roi,
        )

    def compressed_image(self, t_ns: int, frame_id: str, data: bytes, fmt: str) -> Any:
        """sensor_msgs/CompressedImage holding encoded `data` ("jpeg" or "png")."""
        return self.make(
            "sensor_msgs/msg/CompressedImage",
            header=self.header(t_ns, frame_id),
            format=fmt,
            data=np.frombuffer(data, np.uint8),
        )

    def raw_image(self, t_ns: int, frame_id: str, rgb: np.ndarray) -> Any:
        """sensor_msgs/Image rgb8 of an (H, W, 3) uint8 array."""
        h, w = rgb.shape[:2]
        return self.make(
            "sensor_msgs/msg/Image",
            header=self.header(t_ns, frame_id),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=3 * w,
            data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1),
        )
