"""`import_bag`: a recorded log -> a team-format folder, in one streaming pass with bounded memory.

A frame is one LiDAR message (its header stamp is the frame's timestamp). Each camera contributes
the image whose stamp is nearest to the sweep's, when within `tolerance_s`; other images are
dropped and counted. `world_from_vehicle` comes from the tf tree (`/tf`, or an Odometry topic) at the
sweep's stamp, identity when the log has none. Points stay in the LiDAR's frame (`frame: sensor`).

Memory: sweeps wait only until the log has moved `tolerance_s` past them (to see every image that
could pair with them); images older than the oldest waiting sweep's window are released, and tf
keeps a few seconds of history. Frames already complete in OUT are not decoded again (resume).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from drivetl.calib import SensorRig
from drivetl.data.formats.bag._calibration import read_calibration, rig_from_calibration
from drivetl.data.formats.bag._camera import image_from_compressed, image_from_raw
from drivetl.data.formats.bag._pointcloud2 import decode_pointcloud2
from drivetl.data.formats.bag._source import LogReader, Message
from drivetl.data.formats.bag._tf import TfTree, frame_name, stamp_ns
from drivetl.data.formats.bag._topics import COMPRESSED, ODOMETRY, LogSelection, check_topics, sensor_name
from drivetl.data.formats.team._layout import check_name
from drivetl.data.records import Boxes, FrameKey, FrameRecord, LidarPoints
from drivetl.errors import DataError


def segment_name(log: Path) -> str:
    """A segment name from the log's file or folder name."""
    stem = log.name[: -len(log.suffix)] if log.suffix in (".bag", ".mcap", ".db3") else log.name
    return sensor_name(stem)


def rig_from_log(log: str | os.PathLike, sel: LogSelection, name: str | None = None) -> SensorRig:
    """The rig of `sel`'s sensors, read from the log alone (see `_calibration`)."""
    log = Path(log)
    with LogReader(log) as reader:
        cal = read_calibration(reader, sel)
    return rig_from_calibration(cal, sel, name or segment_name(log), str(log))


class _Pairing:
    """Waiting sweeps and recent images of one import; yields sweeps with their paired images."""

    def __init__(self, cameras: list[str], tolerance_ns: int) -> None:
        self.tol = tolerance_ns
        self.sweeps: deque[tuple[int, Message]] = deque()
        self.images: dict[str, deque[tuple[int, Message]]] = {c: deque() for c in cameras}
        self.used: set[tuple[str, int]] = set()
        self.dropped_images = 0

    def ready(self, now_ns: int | None) -> list[tuple[int, Message, dict[str, Message]]]:
        out = []
        while self.sweeps and (now_ns is None or self.sweeps[0][0] + 2 * self.tol < now_ns):
            t, msg = self.sweeps.popleft()
            pairs = {}
            for cam, q in self.images.items():
                best = min(q, key=lambda item: abs(item[0] - t), default=None)
                if best is not None and abs(best[0] - t) <= self.tol:
                    pairs[cam] = best[1]
                    self.used.add((cam, best[1].index))
            out.append((t, msg, pairs))
            self._release(self.sweeps[0][0] if self.sweeps else t)
        return out

    def _release(self, oldest_ns: int) -> None:
        for cam, q in self.images.items():
            while q and q[0][0] < oldest_ns - self.tol:
                _, m = q.popleft()
                if (cam, m.index) not in self.used:
                    self.dropped_images += 1
                self.used.discard((cam, m.index))

    def finish(self) -> None:
        for cam, q in self.images.items():
            self.dropped_images += sum((cam, m.index) not in self.used for _, m in q)
            q.clear()


def import_bag(
    log: str | os.PathLike,
    out: str | os.PathLike,
    sel: LogSelection,
    *,
    rig: SensorRig | None = None,
    segment: str | None = None,
    split: str = "train",
    tolerance_s: float = 0.05,
    lidar_format: str = ".pcd",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Import one LiDAR (and its cameras) of a log into a team folder; returns a summary dict.

    rig: the rig to write (its sensor names must match `sel`'s); None reads it from the log.
    progress(done, total): called after every sweep. Resumable: frames already in `out` are skipped.
    """
    from drivetl.data.formats.team import TeamWriter

    log = Path(log)
    where = str(log)
    segment = check_name(segment or segment_name(log), "segment")
    summary: dict[str, Any] = {
        "frames": 0,
        "skipped_frames": 0,
        "boxes": 0,
        "skipped_classes": {},
        "dropped_images": 0,
        "unpaired_frames": 0,
        "dropped_points": 0,
        "duplicate_stamps": 0,
        "notes": set(),
    }
    tol = int(round(tolerance_s * 1e9))
    with LogReader(log) as reader:
        check_topics(sel, reader.topics, where)
        if rig is None:
            rig = rig_from_calibration(read_calibration(reader, sel), sel, segment, where)
        _check_rig_names(rig, sel, where)
        total = reader.counts.get(sel.lidar.topic, 0)
        cams = {c.topic: c.name for c in sel.cameras}
        odom = sel.odometry if sel.odometry in reader.topics else None
        topics = [
            t for t in (sel.lidar.topic, *cams, sel.tf_static, sel.tf, odom) if t and t in reader.topics
        ]
        tf = TfTree()
        pairing = _Pairing(list(cams.values()), tol)
        seen: set[int] = set()
        lidar_frame: list[str] = []
        with TeamWriter(out, rig, lidar_format=lidar_format) as writer:

            def flush(now_ns: int | None) -> None:
                for t, msg, pairs in pairing.ready(now_ns):
                    key = FrameKey(segment, t // 1000)
                    if key.timestamp_us in seen:
                        summary["duplicate_stamps"] += 1
                        continue
                    seen.add(key.timestamp_us)
                    if len(pairs) < len(cams):
                        summary["unpaired_frames"] += 1
                    writer.import_frame(
                        key,
                        split,
                        lambda m=msg, p=pairs, k=key: _frame(
                            k, m, p, rig, tf, sel, summary, lidar_frame, where
                        ),
                        summary,
                    )
                    if progress:
                        progress(summary["frames"] + summary["skipped_frames"], total)

            for m in reader.messages(topics):
                if m.topic in (sel.tf_static, sel.tf):
                    tf.add(
                        m.msg,
                        static=m.topic == sel.tf_static,
                        where=f"{where}: topic {m.topic} message {m.index}",
                    )
                    continue
                if m.topic == odom:
                    _add_odometry(tf, m, reader.topics[odom])
                    continue
                t = stamp_ns(m.msg.header.stamp)
                if m.topic == sel.lidar.topic:
                    pairing.sweeps.append((t, m))
                else:
                    pairing.images[cams[m.topic]].append((t, m))
                flush(m.log_time_ns)
            flush(None)
            pairing.finish()
    summary["dropped_images"] = pairing.dropped_images
    summary["notes"] = sorted(summary["notes"])
    summary["rig"] = rig
    return summary


def _check_rig_names(rig: SensorRig, sel: LogSelection, where: str) -> None:
    rig.lidar(sel.lidar.name)
    for cam in sel.cameras:
        rig.camera(cam.name)


def _add_odometry(tf: TfTree, m: Message, msgtype: str) -> None:
    if msgtype != ODOMETRY:
        return
    from types import SimpleNamespace as NS

    pose = m.msg.pose.pose
    ts = NS(
        header=m.msg.header,
        child_frame_id=m.msg.child_frame_id,
        transform=NS(translation=pose.position, rotation=pose.orientation),
    )
    tf.add(NS(transforms=[ts]), static=False, where=f"odometry message {m.index}")


def _frame(
    key: FrameKey,
    msg: Message,
    pairs: dict[str, Message],
    rig: SensorRig,
    tf: TfTree,
    sel: LogSelection,
    summary: dict[str, Any],
    lidar_frame: list[str],
    where: str,
) -> tuple[FrameRecord, dict[str, int]]:
    at = f"{where}: topic {msg.topic} message {msg.index}"
    frame = frame_name(msg.msg.header.frame_id)
    if not lidar_frame:
        lidar_frame.append(frame)
    elif frame != lidar_frame[0]:
        raise DataError(f"{at}: frame_id {frame!r} differs from the topic's first {lidar_frame[0]!r}")
    cloud = decode_pointcloud2(msg.msg, at, stamp_s=key.timestamp_us * 1e-6, field_map=sel.field_map)
    summary["dropped_points"] += cloud.dropped_points
    summary["notes"].update(f"{sel.lidar.topic}: field {n}" for n in cloud.dropped_fields)
    lidar = LidarPoints(sel.lidar.name, cloud.points, cloud.columns, "sensor")
    cameras = {}
    for name, m in pairs.items():
        cat = f"{where}: topic {m.topic} message {m.index}"
        img = (
            image_from_compressed(m.msg, name, cat)
            if m.msgtype == COMPRESSED
            else image_from_raw(m.msg, name, cat)
        )
        cam = rig.camera(name)
        if m.msgtype != COMPRESSED and (int(m.msg.width), int(m.msg.height)) != (cam.width, cam.height):
            raise DataError(
                f"{cat}: image is {m.msg.width}x{m.msg.height}, the rig's camera {name} is "
                f"{cam.width}x{cam.height}"
            )
        cameras[name] = img
    pose = _world_from_vehicle(tf, sel.vehicle_frame, key.timestamp_us * 1000)
    return FrameRecord(key, rig, {sel.lidar.name: lidar}, cameras, Boxes.empty(), pose), {}


def _world_from_vehicle(tf: TfTree, vehicle: str, t_ns: int) -> np.ndarray:
    """root_from_vehicle through dynamic tf at `t_ns` (identity when the vehicle frame has no parent)."""
    return tf.root_from(vehicle, t_ns)[1]
