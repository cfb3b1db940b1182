"""Argoverse 2 sensor-dataset logs -> FrameRecords and the team format (read with pyarrow).

A log folder holds (Apache Arrow feather files; every pose is `dst_SE3_src`, quaternion qw qx qy qz
plus translation tx_m ty_m tz_m, i.e. drivetl's `dst_from_src`):
- `sensors/lidar/<timestamp_ns>.feather`: one sweep of the two stacked 32-beam LiDARs, already in the
  ego-vehicle frame (x forward, y left, z up): x, y, z (float16), intensity (uint8), laser_number
  (0-31 the upper LiDAR `up_lidar`, 32-63 the lower `down_lidar`), offset_ns (firing time after the
  sweep's timestamp);
- `annotations.feather`: cuboids per sweep timestamp in the ego frame: centre tx_m ty_m tz_m,
  length_m (along the cuboid's x), width_m, height_m, rotation qw..qz, category, track_uuid,
  num_interior_pts (the sweep's points inside the cuboid);
- `city_SE3_egovehicle.feather`: the ego pose per timestamp (world_from_vehicle);
- `calibration/egovehicle_SE3_sensor.feather` (vehicle_from_sensor per sensor; camera frames are
  optical: x right, y down, z forward) and `calibration/intrinsics.feather` (fx_px fy_px cx_px cy_px,
  k1 k2 k3, width_px height_px);
- `sensors/cameras/<camera>/<timestamp_ns>.jpg` when present.

A frame is a sweep; each LiDAR's points are written in the vehicle frame (as recorded) with columns
x, y, z, intensity, laser_id, time (seconds). Heading is the yaw of the cuboid's rotated x axis.
Each camera contributes the image nearest in time within `tolerance_s`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from drivetl.calib import (
    OPTICAL_FROM_CAMERA,
    CameraModel,
    IntensityEncoding,
    LidarModel,
    SensorRig,
    make_transform,
    rotation_from_quaternion_wxyz,
)
from drivetl.calib.beams import beams_from_rings, estimate_columns
from drivetl.data.formats.team._layout import wrap_angle
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.errors import DataError, short_repr

#: AV2 category -> canonical class; None = skipped (counted). Unridden bicycles and motorcycles are
#: objects, not cyclists.
AV2_CLASSES: dict[str, str | None] = {
    **dict.fromkeys(
        (
            "REGULAR_VEHICLE",
            "LARGE_VEHICLE",
            "BUS",
            "BOX_TRUCK",
            "TRUCK",
            "TRUCK_CAB",
            "VEHICULAR_TRAILER",
            "SCHOOL_BUS",
            "ARTICULATED_BUS",
            "RAILED_VEHICLE",
            "MESSAGE_BOARD_TRAILER",
            "TRAFFIC_LIGHT_TRAILER",
        ),
        "vehicle",
    ),
    **dict.fromkeys(("PEDESTRIAN", "OFFICIAL_SIGNALER"), "pedestrian"),
    **dict.fromkeys(("BICYCLIST", "MOTORCYCLIST", "WHEELED_RIDER"), "cyclist"),
    **dict.fromkeys(("SIGN", "STOP_SIGN", "MOBILE_PEDESTRIAN_CROSSING_SIGN"), "sign"),
    **dict.fromkeys(
        (
            "BICYCLE",
            "MOTORCYCLE",
            "BOLLARD",
            "CONSTRUCTION_CONE",
            "CONSTRUCTION_BARREL",
            "ANIMAL",
            "DOG",
            "STROLLER",
            "WHEELCHAIR",
            "WHEELED_DEVICE",
        ),
        None,
    ),
}
LIDARS = (("up_lidar", 0, 32), ("down_lidar", 32, 64))
_POSE = ("qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")


def read_feather(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named columns of a feather file as numpy arrays; DataError naming the file and what is missing."""
    import pyarrow as pa
    import pyarrow.feather as feather

    if not path.is_file():
        raise DataError(f"{path}: not found; an Argoverse 2 log needs it")
    try:
        table = feather.read_table(path)
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataError(f"{path}: columns {missing} missing (has {short_repr(table.column_names)})")
        return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}
    except (OSError, pa.ArrowException) as exc:  # ArrowMemoryError too: a damaged declared size
        raise DataError(f"{path}: not a readable feather file ({short_repr(str(exc), 120)})") from None


def _poses(cols: dict[str, np.ndarray], where: str) -> np.ndarray:
    """(N, 4, 4) dst_from_src of quaternion + translation rows."""
    q = np.stack([cols[k] for k in _POSE[:4]], axis=1).astype(np.float64)
    t = np.stack([cols[k] for k in _POSE[4:]], axis=1).astype(np.float64)
    norm = np.linalg.norm(q, axis=1)
    bad = np.flatnonzero(~np.isfinite(norm) | (np.abs(norm - 1) > 1e-3))
    if bad.size:
        raise DataError(f"{where}: row {bad[0]} has a non-unit quaternion (norm {norm[bad[0]]:.4g})")
    return np.stack(
        [
            make_transform(rotation_from_quaternion_wxyz(qi / n), ti)
            for qi, n, ti in zip(q, norm, t, strict=True)
        ]
    )


def av2_rig(log: Path, calibration: Path, first_sweep: Path, name: str) -> SensorRig:
    """The rig: both LiDARs (beams from laser_number in the first sweep), cameras with images in the log."""
    cal = read_feather(calibration / "egovehicle_SE3_sensor.feather", ("sensor_name", *_POSE))
    where = str(calibration / "egovehicle_SE3_sensor.feather")
    mounts = dict(zip([str(s) for s in cal["sensor_name"]], _poses(cal, where), strict=True))
    sweep = read_feather(first_sweep, ("x", "y", "z", "intensity", "laser_number"))
    xyz = np.stack([sweep["x"], sweep["y"], sweep["z"]], axis=1).astype(np.float64)
    lidars = []
    for lname, lo, hi in LIDARS:
        if lname not in mounts:
            raise DataError(f"{where}: no row for {lname}; the Argoverse 2 calibration lists both LiDARs")
        sel = (sweep["laser_number"] >= lo) & (sweep["laser_number"] < hi)
        m = np.linalg.inv(mounts[lname])
        pts = xyz[sel] @ m[:3, :3].T + m[:3, 3]
        inc, beam = beams_from_rings(pts, sweep["laser_number"][sel])
        lidars.append(
            LidarModel(
                name=lname,
                model="Velodyne VLP-32C (Argoverse 2)",
                vehicle_from_lidar=mounts[lname],
                inclinations=inc,
                columns=estimate_columns(pts, beam),
                max_range=200.0,
                intensity=IntensityEncoding("uint8", 255.0),
            )
        )
    cameras = []
    cam_dir = log / "sensors" / "cameras"
    present = sorted(p.name for p in cam_dir.iterdir() if p.is_dir()) if cam_dir.is_dir() else []
    if present:
        intr = read_feather(
            calibration / "intrinsics.feather",
            ("sensor_name", "fx_px", "fy_px", "cx_px", "cy_px", "k1", "k2", "k3", "width_px", "height_px"),
        )
        rows = {str(s): i for i, s in enumerate(intr["sensor_name"])}
        for cname in present:
            if cname not in rows or cname not in mounts:
                raise DataError(f"{calibration}: camera {cname} has images but no intrinsics or extrinsics")
            i = rows[cname]
            cameras.append(
                CameraModel(
                    name=cname,
                    width=int(intr["width_px"][i]),
                    height=int(intr["height_px"][i]),
                    fx=float(intr["fx_px"][i]),
                    fy=float(intr["fy_px"][i]),
                    cx=float(intr["cx_px"][i]),
                    cy=float(intr["cy_px"][i]),
                    k1=float(intr["k1"][i]),
                    k2=float(intr["k2"][i]),
                    k3=float(intr["k3"][i]),
                    vehicle_from_camera=mounts[cname] @ OPTICAL_FROM_CAMERA,
                )
            )
    return SensorRig(name=name, lidars=tuple(lidars), cameras=tuple(cameras), ground="estimate")


class Av2Log:
    """One Argoverse 2 log folder: `sweeps` (timestamps in ns), `read(ts)` -> (FrameRecord, skipped)."""

    def __init__(self, log: str | os.PathLike, calibration: str | os.PathLike | None = None) -> None:
        self.root = Path(log)
        self.calibration = Path(calibration) if calibration else self.root / "calibration"
        lidar_dir = self.root / "sensors" / "lidar"
        self.sweeps = sorted(int(p.stem) for p in lidar_dir.glob("*.feather") if p.stem.isdigit())
        if not self.sweeps:
            raise DataError(f"{lidar_dir}: no <timestamp_ns>.feather sweeps; pass an Argoverse 2 log folder")
        self.segment = self.root.name
        self.rig = av2_rig(self.root, self.calibration, lidar_dir / f"{self.sweeps[0]}.feather", self.segment)
        self._annotations = self._read_annotations()
        self._poses = self._read_poses()
        self._images = {
            cam.name: sorted(
                int(p.stem)
                for p in (self.root / "sensors" / "cameras" / cam.name).glob("*.jpg")
                if p.stem.isdigit()
            )
            for cam in self.rig.cameras
        }

    def _read_annotations(self) -> dict[int, list[int]] | None:
        path = self.root / "annotations.feather"
        if not path.is_file():
            return None
        cols = ("timestamp_ns", "track_uuid", "category", "length_m", "width_m", "height_m", *_POSE)
        self._ann = read_feather(path, (*cols, "num_interior_pts"))
        unknown = [i for i, c in enumerate(self._ann["category"]) if str(c) not in AV2_CLASSES]
        if unknown:
            c = str(self._ann["category"][unknown[0]])[:40]
            raise DataError(f"{path}: row {unknown[0]} has unknown category {c!r}; known: AV2_CLASSES")
        self._ann_poses = _poses(self._ann, str(path))
        by_ts: dict[int, list[int]] = {}
        for i, ts in enumerate(self._ann["timestamp_ns"]):
            by_ts.setdefault(int(ts), []).append(i)
        return by_ts

    def _read_poses(self) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.root / "city_SE3_egovehicle.feather"
        if not path.is_file():
            return None
        cols = read_feather(path, ("timestamp_ns", *_POSE))
        order = np.argsort(cols["timestamp_ns"])
        return cols["timestamp_ns"][order].astype(np.int64), _poses(cols, str(path))[order]

    def boxes(self, ts: int) -> tuple[Boxes, np.ndarray, dict[str, int]]:
        """(Boxes in the ego frame, (M,) num_interior_pts, skipped categories) of sweep `ts`."""
        rows = (self._annotations or {}).get(ts, [])
        kept, classes, skipped = [], [], {}
        for i in rows:
            cat = str(self._ann["category"][i])
            if AV2_CLASSES[cat] is None:
                skipped[cat] = skipped.get(cat, 0) + 1
            else:
                kept.append(i)
                classes.append(AV2_CLASSES[cat])
        if not kept:
            return Boxes.empty(), np.zeros(0, np.int64), skipped
        a, m = self._ann, self._ann_poses[kept]
        heading = wrap_angle(np.arctan2(m[:, 1, 0], m[:, 0, 0]))
        arr = np.column_stack(
            [m[:, :3, 3], a["length_m"][kept], a["width_m"][kept], a["height_m"][kept], heading]
        ).astype(np.float64)
        npts = a["num_interior_pts"][kept].astype(np.int64)
        ids = tuple(str(a["track_uuid"][i]) for i in kept)
        return Boxes(arr, tuple(classes), ids, npts), npts, skipped

    def read(self, ts: int, tolerance_s: float = 0.05) -> tuple[FrameRecord, dict[str, int]]:
        """The FrameRecord of sweep `ts` (nanoseconds) and the AV2 categories it skipped."""
        path = self.root / "sensors" / "lidar" / f"{ts}.feather"
        s = read_feather(path, ("x", "y", "z", "intensity", "laser_number", "offset_ns"))
        pts = np.column_stack(
            [s["x"], s["y"], s["z"], s["intensity"], s["laser_number"], s["offset_ns"] * 1e-9]
        ).astype(np.float32)
        if not np.isfinite(pts[:, :3]).all():
            raise DataError(
                f"{path}: {int((~np.isfinite(pts[:, :3])).any(axis=1).sum())} points are not finite"
            )
        cols = ("x", "y", "z", "intensity", "laser_id", "time")
        lidars = {}
        for lname, lo, hi in LIDARS:
            sel = (s["laser_number"] >= lo) & (s["laser_number"] < hi)
            lidars[lname] = LidarPoints(lname, pts[sel], cols, "vehicle")
        cameras = {}
        for cname, stamps in self._images.items():
            near = _nearest(stamps, ts, int(tolerance_s * 1e9))
            if near is not None:
                path = self.root / "sensors" / "cameras" / cname / f"{near}.jpg"
                cameras[cname] = CameraImage(cname, path.read_bytes(), "jpeg", str(path))
        boxes, _, skipped = self.boxes(ts)
        pose = np.eye(4)
        if self._poses is not None:
            times, mats = self._poses
            k = _nearest(times, ts, 50_000_000)
            if k is not None:
                pose = mats[int(np.searchsorted(times, k))]
        key = FrameKey(self.segment, ts // 1000)
        return FrameRecord(key, self.rig, lidars, cameras, boxes, pose), skipped


def _nearest(sorted_ts: Any, ts: int, tol: int) -> int | None:
    if len(sorted_ts) == 0:
        return None
    k = int(np.searchsorted(sorted_ts, ts))
    cands = [sorted_ts[j] for j in (k - 1, k) if 0 <= j < len(sorted_ts)]
    best = min(cands, key=lambda v: abs(int(v) - ts))
    return int(best) if abs(int(best) - ts) <= tol else None


def interior_agreement(log: Av2Log, ts: int) -> dict[str, tuple[int, int, float]]:
    """Per class: (boxes, boxes whose counted interior points are within 5% of num_interior_pts, mean
    relative error), counting the sweep's points inside each imported box (yaw-only cuboids)."""
    from drivetl.data.canonicalize import points_in_boxes

    record, _ = log.read(ts)
    pts = np.concatenate([lp.points[:, :3] for lp in record.lidars.values()])
    boxes, npts, _ = log.boxes(ts)
    counts = points_in_boxes(pts, boxes.boxes).sum(axis=1) if len(boxes) else np.zeros(0)
    out: dict[str, tuple[int, int, float]] = {}
    for cls in sorted(set(boxes.classes)):
        idx = [i for i, c in enumerate(boxes.classes) if c == cls]
        err = np.abs(counts[idx] - npts[idx]) / np.maximum(npts[idx], 1)
        ok = np.abs(counts[idx] - npts[idx]) <= np.maximum(0.05 * npts[idx], 1)
        out[cls] = (len(idx), int(ok.sum()), float(err.mean()))
    return out


def import_av2(
    src: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "train",
    calibration: str | os.PathLike | None = None,
    tolerance_s: float = 0.05,
) -> dict[str, Any]:
    """Import an Argoverse 2 log folder into a team folder (resumable); returns the import summary."""
    from drivetl.data.formats.team import TeamWriter

    log = Av2Log(src, calibration)
    summary: dict[str, Any] = {"frames": 0, "skipped_frames": 0, "boxes": 0, "skipped_classes": {}}
    with TeamWriter(out, log.rig, lidar_format=".npz") as writer:
        for ts in log.sweeps:
            key = FrameKey(log.segment, ts // 1000)
            writer.import_frame(key, split, lambda t=ts: log.read(t, tolerance_s), summary)
    lines = []
    if log._annotations:
        agree = interior_agreement(log, log.sweeps[0])
        for cls, (n, ok, err) in agree.items():
            lines.append(
                f"{cls}: {ok}/{n} boxes hold num_interior_pts within 5% (mean error {100 * err:.1f}%), "
                f"sweep {log.sweeps[0]}"
            )
    summary["lines"] = lines
    return summary


__all__ = ["AV2_CLASSES", "Av2Log", "av2_rig", "import_av2", "interior_agreement"]
