"""Waymo laser labels <-> `Boxes` (vehicle frame, canonical classes)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drivetl.data.formats.waymo._names import CLASS_FROM_TYPE, TYPE_FROM_CLASS
from drivetl.data.records import Boxes
from drivetl.errors import DataError


def wrap_angle(a: float) -> float:
    """`a` wrapped to (-pi, pi]."""
    w = math.remainder(a, 2 * math.pi)
    return math.pi if w == -math.pi else w


def boxes_from_labels(labels: Any) -> tuple[Boxes, int]:
    """Boxes from repeated Label protos; TYPE_UNKNOWN labels are dropped. Returns (boxes, dropped)."""
    rows, classes, ids, npts, diff, speed = [], [], [], [], [], []
    dropped = 0
    for lab in labels:
        cls = CLASS_FROM_TYPE.get(int(lab.type))
        if cls is None:
            dropped += 1
            continue
        b = lab.box
        rows.append((b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, wrap_angle(b.heading)))
        classes.append(cls)
        ids.append(lab.id)
        npts.append(lab.num_lidar_points_in_box)
        diff.append(int(lab.detection_difficulty_level))
        has_speed = lab.HasField("metadata")
        speed.append((lab.metadata.speed_x, lab.metadata.speed_y) if has_speed else (np.nan, np.nan))
    if not rows:
        return Boxes.empty(), dropped
    return Boxes(
        np.asarray(rows, dtype=np.float64),
        tuple(classes),
        tuple(ids),
        np.asarray(npts, dtype=np.int32),
        np.asarray(diff, dtype=np.int8),
        np.asarray(speed, dtype=np.float32),
    ), dropped


def fill_labels(frame: Any, boxes: Boxes, where: str) -> None:
    """Append one laser label per box to `frame.laser_labels` (Waymo class names, metadata speed)."""
    for i in range(len(boxes)):
        cls = boxes.classes[i]
        if cls not in TYPE_FROM_CLASS:
            raise DataError(
                f"{where}: box {i} has class {cls!r}, which Waymo's format cannot hold "
                f"(use one of {', '.join(TYPE_FROM_CLASS)})"
            )
        lab = frame.laser_labels.add()
        x, y, z, length, width, height, heading = (float(v) for v in boxes.boxes[i])
        lab.box.center_x, lab.box.center_y, lab.box.center_z = x, y, z
        lab.box.length, lab.box.width, lab.box.height, lab.box.heading = length, width, height, heading
        lab.type = TYPE_FROM_CLASS[cls]
        lab.id = boxes.ids[i] or f"box{i}"
        if boxes.num_points[i] >= 0:
            lab.num_lidar_points_in_box = int(boxes.num_points[i])
        lab.detection_difficulty_level = int(boxes.difficulty[i])
        sx, sy = (float(v) for v in boxes.speed[i])
        if math.isfinite(sx) and math.isfinite(sy):
            lab.metadata.speed_x, lab.metadata.speed_y = sx, sy
