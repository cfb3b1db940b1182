"""KITTI object layout (velodyne, calib, image_2, label_2) -> FrameRecords and the team format.

The vehicle frame of an imported KITTI frame is the Velodyne frame (x forward, y left, z up).
KITTI labels are boxes in the rectified camera frame (x right, y down, z forward): dimensions
(h, w, l), location (x, y, z) of the bottom-face centre, and rotation ry about the camera's y axis,
with the box's length direction (cos ry, 0, -sin ry) in that frame. We convert to DESIGN.md's boxes:
centre = bottom centre lifted by h/2 (toward -y_cam), moved into the Velodyne frame with
velo_from_rect = inv(R0_rect @ Tr_velo_to_cam); heading = yaw of the rotated length direction.
For an ideal calibration that is heading = -ry - pi/2 (wrapped to (-pi, pi]).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivetl.calib.kitti import read_kitti_calib, rig_from_kitti_calib
from drivetl.data.formats.pointfile import read_points
from drivetl.data.formats.team._layout import wrap_angle
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.errors import DataError

#: KITTI class -> canonical class; None = skipped (counted).
KITTI_CLASSES: dict[str, str | None] = {
    "Car": "vehicle",
    "Van": "vehicle",
    "Truck": "vehicle",
    "Pedestrian": "pedestrian",
    "Person_sitting": "pedestrian",
    "Cyclist": "cyclist",
    "Tram": None,
    "Misc": None,
    "DontCare": None,
}
LIDAR_NAME = "velodyne"
CAMERA_NAME = "camera_2"


@dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI label file (camera-frame box; angles in radians, sizes in metres)."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]  # h, w, l
    location: tuple[float, float, float]  # bottom centre, rectified camera frame
    rotation_y: float


def velo_from_rect(calib: dict[str, np.ndarray]) -> np.ndarray:
    """(4, 4) transform from the rectified camera frame to the Velodyne (= vehicle) frame."""
    r0 = np.eye(4)
    r0[:3, :3] = calib["R0_rect"]
    tr = np.eye(4)
    tr[:3, :4] = calib["Tr_velo_to_cam"]
    return np.linalg.inv(r0 @ tr)


def read_kitti_labels(path: str | os.PathLike) -> list[KittiObject]:
    """Parse a KITTI label_2 file (15 fields per line; a 16th score field is ignored)."""
    path = Path(path)
    objs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable KITTI label file ({exc})") from None
    for i, line in enumerate(lines):
        f = line.split()
        if not f:
            continue
        if len(f) < 15:
            raise DataError(f"{path}:{i + 1}: {len(f)} fields, a KITTI label line has 15")
        try:
            v = [float(x) for x in f[1:15]]
        except ValueError as exc:
            raise DataError(f"{path}:{i + 1}: non-numeric field ({exc})") from exc
        if not all(math.isfinite(x) for x in v):
            raise DataError(f"{path}:{i + 1}: NaN or inf in a KITTI label line; fix or drop the object")
        objs.append(
            KittiObject(f[0], v[0], int(v[1]), v[2], tuple(v[3:7]), tuple(v[7:10]), tuple(v[10:13]), v[13])
        )
    return objs


def boxes_from_kitti(
    objects: list[KittiObject], velo_from_rect_cam: np.ndarray, where: str = "labels"
) -> tuple[Boxes, dict[str, int]]:
    """Convert KITTI objects to vehicle(Velodyne)-frame Boxes; returns (boxes, skipped count per type).

    Raises DataError naming `where` for a type that is not in KITTI_CLASSES.
    """
    rows, classes, skipped = [], [], {}
    m = np.asarray(velo_from_rect_cam, dtype=np.float64)
    for i, o in enumerate(objects):
        if o.type not in KITTI_CLASSES:
            raise DataError(
                f"{where}: object {i} has unknown KITTI class {o.type!r}; known: {sorted(KITTI_CLASSES)}"
            )
        canon = KITTI_CLASSES[o.type]
        if canon is None:
            skipped[o.type] = skipped.get(o.type, 0) + 1
            continue
        h, w, length = o.dimensions
        centre_cam = np.array([o.location[0], o.location[1] - h / 2, o.location[2], 1.0])
        centre = (m @ centre_cam)[:3]
        d = m[:3, :3] @ np.array([math.cos(o.rotation_y), 0.0, -math.sin(o.rotation_y)])
        heading = float(wrap_angle(math.atan2(d[1], d[0])))
        rows.append([*centre, length, w, h, heading])
        classes.append(canon)
    if not rows:
        return Boxes.empty(), skipped
    return Boxes(np.asarray(rows), tuple(classes)), skipped


def kitti_from_boxes(boxes: Boxes, velo_from_rect_cam: np.ndarray) -> np.ndarray:
    """Inverse of `boxes_from_kitti`: (M, 7) `h, w, l, x, y, z, ry` in the KITTI camera convention."""
    rect_from_velo = np.linalg.inv(np.asarray(velo_from_rect_cam, dtype=np.float64))
    out = np.zeros((len(boxes), 7))
    for i, (x, y, z, length, w, h, heading) in enumerate(boxes.boxes):
        c = (rect_from_velo @ np.array([x, y, z, 1.0]))[:3]
        d = rect_from_velo[:3, :3] @ np.array([math.cos(heading), math.sin(heading), 0.0])
        ry = float(wrap_angle(math.atan2(-d[2], d[0])))
        out[i] = [h, w, length, c[0], c[1] + h / 2, c[2], ry]
    return out


def kitti_frame_ids(root: str | os.PathLike) -> list[str]:
    """Frame ids (e.g. '000000') present in `root/velodyne`."""
    return sorted(p.stem for p in (Path(root) / "velodyne").glob("*.bin"))


def read_kitti_frame(
    root: str | os.PathLike, frame: str, segment: str = "kitti"
) -> tuple[FrameRecord, dict[str, int]]:
    """Read one KITTI object frame into a FrameRecord (points in the Velodyne = vehicle frame).

    root: the folder holding velodyne/, calib/, image_2/ and label_2/ (label optional).
    Returns (record, skipped class counts).
    """
    root = Path(root)
    calib_path = root / "calib" / f"{frame}.txt"
    image_path = root / "image_2" / f"{frame}.png"
    calib = read_kitti_calib(calib_path)
    cameras = {}
    image_size = None
    if image_path.is_file():
        data = image_path.read_bytes()
        img = CameraImage(CAMERA_NAME, data, "png", str(image_path))
        try:
            image_size = img.size()
        except OSError as exc:
            raise DataError(f"{image_path}: undecodable image ({exc})") from exc
        cameras[CAMERA_NAME] = img
    rig = rig_from_kitti_calib(calib_path, image_size or (1242, 375))
    pts, _ = read_points(root / "velodyne" / f"{frame}.bin", columns=("x", "y", "z", "intensity"))
    lidar = LidarPoints(LIDAR_NAME, pts, ("x", "y", "z", "intensity"), "vehicle")
    label_path = root / "label_2" / f"{frame}.txt"
    boxes, skipped = Boxes.empty(), {}
    if label_path.is_file():
        boxes, skipped = boxes_from_kitti(
            read_kitti_labels(label_path), velo_from_rect(calib), str(label_path)
        )
    key = FrameKey(segment, int(frame) if frame.isdigit() else 0)
    return FrameRecord(key, rig, {LIDAR_NAME: lidar}, cameras, boxes), skipped


def iter_kitti(
    root: str | os.PathLike, segment: str = "kitti"
) -> Iterator[tuple[FrameRecord, dict[str, int]]]:
    """(record, skipped class counts) of every frame of a KITTI object folder, in frame-id order."""
    for frame in kitti_frame_ids(root):
        yield read_kitti_frame(root, frame, segment)


def import_kitti(src: str | os.PathLike, out: str | os.PathLike, split: str = "train") -> dict[str, object]:
    """Import a KITTI object folder (`training/` or its parent) into a team-format folder.

    Frames already complete in `out` are skipped (resumable). Returns a summary dict with the
    counts of frames written and skipped, boxes written, and skipped KITTI classes.
    """
    from drivetl.data.formats.team import TeamWriter

    src = Path(src)
    if not (src / "velodyne").is_dir() and (src / "training" / "velodyne").is_dir():
        src = src / "training"
    ids = kitti_frame_ids(src)
    if not ids:
        raise DataError(f"{src}: no velodyne/*.bin frames found; pass a KITTI object 'training' folder")
    summary: dict[str, object] = {"frames": 0, "skipped_frames": 0, "boxes": 0, "skipped_classes": {}}
    first, _ = read_kitti_frame(src, ids[0])
    with TeamWriter(out, first.rig, lidar_format=".bin") as writer:
        for frame in ids:
            key = FrameKey("kitti", int(frame) if frame.isdigit() else 0)
            writer.import_frame(key, split, lambda f=frame: read_kitti_frame(src, f), summary)
    return summary
