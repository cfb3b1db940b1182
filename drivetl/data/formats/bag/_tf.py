"""`/tf_static` and `/tf` (tf2_msgs/TFMessage) -> `vehicle_from_sensor` and `world_from_vehicle`.

Each TransformStamped says `parent_from_child`: its translation and rotation (quaternion x, y, z,
w, ROS's order) map a point in `child_frame_id` into `header.frame_id`. Static edges never change;
dynamic edges are kept as a short time series per (parent, child) and interpolated (translation
linearly, rotation by slerp) at the asked time. Frame ids lose a leading '/' (ROS 1's tf named
frames '/base_link').

`dst_from_src(dst, src)` walks the tree: it finds the path from `src` up to the common ancestor of
`src` and `dst` and composes the edges, inverting those walked downwards.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from drivetl.calib.se3 import quaternion_wxyz_from_rotation, rotation_from_quaternion_xyzw
from drivetl.errors import DataError


def frame_name(frame_id: str) -> str:
    """A tf frame id without ROS 1's leading '/'."""
    return frame_id.lstrip("/")


def stamp_ns(stamp: Any) -> int:
    """Nanoseconds of a ROS time (`sec`, `nanosec`; rosbags names ROS 1's `nsec` the same way)."""
    return int(stamp.sec) * 1_000_000_000 + int(getattr(stamp, "nanosec", getattr(stamp, "nsec", 0)))


def transform_matrix(tf: Any, where: str) -> np.ndarray:
    """(4, 4) float64 `parent_from_child` of a geometry_msgs/Transform; DataError for a bad quaternion."""
    q = np.array([tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w], dtype=np.float64)
    t = np.array([tf.translation.x, tf.translation.y, tf.translation.z], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not (np.isfinite(q).all() and np.isfinite(t).all()) or abs(norm - 1.0) > 1e-3:
        raise DataError(
            f"{where}: transform has a non-unit quaternion (norm {norm:.4g}) or non-finite values; "
            "fix the publisher's calibration"
        )
    m = np.eye(4)
    m[:3, :3] = rotation_from_quaternion_xyzw(q / norm)
    m[:3, 3] = t
    return m


def _interpolate(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """Rigid transform a fraction `w` of the way from `a` to `b` (linear translation, slerp rotation)."""
    qa = quaternion_wxyz_from_rotation(a[:3, :3])
    qb = quaternion_wxyz_from_rotation(b[:3, :3])
    dot = float(np.dot(qa, qb))
    if dot < 0:
        qb, dot = -qb, -dot
    if dot > 0.9995:
        q = qa + w * (qb - qa)
    else:
        theta = math.acos(min(dot, 1.0))
        q = (math.sin((1 - w) * theta) * qa + math.sin(w * theta) * qb) / math.sin(theta)
    q = q / np.linalg.norm(q)
    m = np.eye(4)
    m[:3, :3] = rotation_from_quaternion_xyzw([q[1], q[2], q[3], q[0]])
    m[:3, 3] = (1 - w) * a[:3, 3] + w * b[:3, 3]
    return m


class TfTree:
    """Transforms between tf frames, from tf_static and tf messages.

    max_age_ns: dynamic samples older than the newest minus this are forgotten (bounded memory over a
    long log); `lookup` tolerates asking up to `max_gap_ns` outside the samples it holds.
    """

    def __init__(self, max_age_ns: int = 10_000_000_000, max_gap_ns: int = 100_000_000) -> None:
        self.static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, parent_from_child)
        self.dynamic: dict[str, tuple[str, list[int], list[np.ndarray]]] = {}
        self.max_age_ns = max_age_ns
        self.max_gap_ns = max_gap_ns

    def add(self, msg: Any, *, static: bool, where: str) -> None:
        """Add every TransformStamped of a tf2_msgs/TFMessage."""
        for i, ts in enumerate(msg.transforms):
            parent, child = frame_name(ts.header.frame_id), frame_name(ts.child_frame_id)
            m = transform_matrix(ts.transform, f"{where}: transforms[{i}] {parent} -> {child}")
            if static or child in self.static:
                self.static[child] = (parent, m)
                continue
            _, times, mats = self.dynamic.setdefault(child, (parent, [], []))
            t = stamp_ns(ts.header.stamp)
            k = bisect.bisect_left(times, t)
            if k < len(times) and times[k] == t:
                mats[k] = m
            else:
                times.insert(k, t)
                mats.insert(k, m)
            cut = bisect.bisect_left(times, times[-1] - self.max_age_ns)
            if cut:
                del times[:cut], mats[:cut]

    def frames(self) -> set[str]:
        """Every frame id named by an edge."""
        out = set(self.static) | set(self.dynamic)
        out |= {p for p, _ in self.static.values()} | {p for p, _, _ in self.dynamic.values()}
        return out

    def _edge(self, child: str, t_ns: int | None) -> tuple[str, np.ndarray] | None:
        if child in self.static:
            return self.static[child]
        if child not in self.dynamic:
            return None
        parent, times, mats = self.dynamic[child]
        if not times:
            return None
        if t_ns is None:  # a mounting published on /tf only: its earliest sample
            return parent, mats[0]
        k = bisect.bisect_left(times, t_ns)
        if k < len(times) and times[k] == t_ns:
            return parent, mats[k]
        if 0 < k < len(times):
            w = (t_ns - times[k - 1]) / (times[k] - times[k - 1])
            return parent, _interpolate(mats[k - 1], mats[k], w)
        j = 0 if k == 0 else len(times) - 1
        if abs(times[j] - t_ns) <= self.max_gap_ns:
            return parent, mats[j]
        return None

    def _edges(self, frame: str, t_ns: int | None) -> list[tuple[str, np.ndarray]]:
        """[(name_i, parent_from_name_i)] from `frame` up to its root; the root's matrix is identity."""
        out: list[tuple[str, np.ndarray]] = []
        seen = {frame}
        while (edge := self._edge(frame, t_ns)) is not None and edge[0] not in seen:
            out.append((frame, edge[1]))
            frame = edge[0]
            seen.add(frame)
        out.append((frame, np.eye(4)))
        return out

    @staticmethod
    def _up_to(edges: list[tuple[str, np.ndarray]], ancestor: str) -> np.ndarray:
        """ancestor_from_frame along `edges` (frame first)."""
        acc = np.eye(4)
        for name, parent_from_name in edges:
            if name == ancestor:
                return acc
            acc = parent_from_name @ acc
        raise KeyError(ancestor)

    def root_from(self, frame: str, t_ns: int | None = None) -> tuple[str, np.ndarray]:
        """(root frame, root_from_frame) of `frame`'s tree at `t_ns`; (frame, identity) without a parent."""
        edges = self._edges(frame_name(frame), t_ns)
        return edges[-1][0], self._up_to(edges, edges[-1][0])

    def dst_from_src(self, dst: str, src: str, t_ns: int | None = None) -> np.ndarray | None:
        """(4, 4) `dst_from_src` at time `t_ns`, or None when not connected.

        t_ns None: static edges, and the earliest sample of edges that only /tf publishes (a sensor
        mounting some logs put on /tf). Composes only the edges up to the frames' nearest common ancestor.
        """
        dst, src = frame_name(dst), frame_name(src)
        if dst == src:
            return np.eye(4)
        up_src, up_dst = self._edges(src, t_ns), self._edges(dst, t_ns)
        src_names = {name for name, _ in up_src}
        common = next((name for name, _ in up_dst if name in src_names), None)
        if common is None:
            return None
        return np.linalg.inv(self._up_to(up_dst, common)) @ self._up_to(up_src, common)

    def require(self, dst: str, src: str, where: str, t_ns: int | None = None) -> np.ndarray:
        """`dst_from_src`, or DataError naming both frames and the frames the log knows."""
        m = self.dst_from_src(dst, src, t_ns)
        if m is None:
            known = ", ".join(sorted(self.frames())[:12]) or "none"
            raise DataError(
                f"{where}: no tf path from {src!r} to {dst!r} (frames in tf: {known}); record /tf_static, "
                "or pass --vehicle-frame with a frame that is connected to the sensors"
            )
        return m
