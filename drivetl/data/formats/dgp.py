"""TRI DGP scenes (scene JSON + calibration + LiDAR .npz + camera JPEGs + 3D boxes) -> FrameRecords.

DGP conventions used here:
- calibration `extrinsics[i]` is the pose of sensor `names[i]` in the vehicle (body) frame, a unit
  quaternion (qw, qx, qy, qz) and a translation: vehicle_from_sensor. Cameras are given in the
  optical frame (x right, y down, z forward), so our Waymo-style camera frame is
  vehicle_from_camera = vehicle_from_optical @ OPTICAL_FROM_CAMERA.
- intrinsics are fx, fy, cx, cy (skew must be 0); there is no distortion in the calibration.
- point clouds (`data` key, columns from `point_format`) are in the LiDAR frame; 3D boxes of the
  `bounding_box_3d/LIDAR` annotation are in the LiDAR frame too, their pose at the box centre.
- datum `pose` is world_from_sensor.
The DGP calibration has no beam table, so the LiDAR's inclinations are estimated from the first
scan (`drivetl.calib.beams`), and the rig says `ground: estimate`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from drivetl.calib import CameraModel, IntensityEncoding, LidarModel, SensorRig
from drivetl.calib.beams import estimate_beams
from drivetl.calib.camera import OPTICAL_FROM_CAMERA
from drivetl.calib.se3 import make_transform, rotation_from_quaternion_wxyz
from drivetl.data.formats._dgp_schema import (
    check_annotations,
    check_calibration,
    check_ontology,
    check_scene,
)
from drivetl.data.formats._paths import contained_path
from drivetl.data.formats.pointfile import read_points
from drivetl.data.formats.team._layout import transform_boxes, wrap_angle
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.errors import DataError, RigError

#: DGP ontology name -> canonical class; None = skipped (counted).
DGP_CLASSES: dict[str, str | None] = {
    "Car": "vehicle",
    "Truck": "vehicle",
    "Bus/RV/Caravan": "vehicle",
    "Bus": "vehicle",
    "Van": "vehicle",
    "Person": "pedestrian",
    "Pedestrian": "pedestrian",
    "Bicycle": "cyclist",
    "Motorcycle": "cyclist",
    "Cyclist": "cyclist",
    "Wheeled Slow": None,
    "Train": None,
    "Towed Object": None,
    "Trailer": None,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _pose(d: Mapping[str, Any], where: str) -> np.ndarray:
    """(4, 4) transform from DGP's {rotation: {qw,qx,qy,qz}, translation: {x,y,z}}."""
    try:
        r, t = d["rotation"], d["translation"]
        q = np.array([r["qw"], r["qx"], r["qy"], r["qz"]], dtype=np.float64)
        trans = np.array([t["x"], t["y"], t["z"]], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise RigError(
            f"{where}: needs rotation {{qw,qx,qy,qz}} and translation {{x,y,z}} ({exc!r} missing)"
        ) from None
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or abs(norm - 1.0) > 1e-3:
        raise RigError(f"{where}: rotation quaternion has norm {norm:.4f}, expected a unit quaternion")
    return make_transform(rotation_from_quaternion_wxyz(q / norm), trans)


def _timestamp_us(text: str, where: str) -> int:
    try:
        dt = datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError as exc:
        raise DataError(f"{where}: timestamp {text!r} is not ISO 8601 ({exc})") from exc
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: unreadable DGP JSON ({exc})") from None


def find_scene_json(src: Path) -> Path:
    """The scene JSON of a DGP scene folder (DataError naming the folder when there is none)."""
    scenes = sorted(src.glob("scene*.json"))
    if not scenes:
        raise DataError(f"{src}: no scene*.json; pass a DGP scene folder")
    return scenes[0]


class DgpScene:
    """One DGP scene folder: its samples, calibration and ontology."""

    def __init__(self, src: str | os.PathLike, classes: Mapping[str, str | None] | None = None) -> None:
        self.src = Path(src)
        self.scene_path = find_scene_json(self.src)
        self.scene = check_scene(_load_json(self.scene_path), str(self.scene_path))
        self.datums = {d["key"]: d for d in self.scene.get("data", [])}
        self.classes = dict(DGP_CLASSES if classes is None else classes)
        self.segment = re.sub(r"[^A-Za-z0-9_.\-]", "_", self.src.name) or "dgp"
        self.ontology = self._ontology()
        self._rigs: dict[str, SensorRig] = {}

    def _ontology(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for key in sorted(set((self.scene.get("ontologies") or {}).values())):
            path = self._file(f"ontology/{key}.json", "ontologies")
            if path.is_file():
                out.update(check_ontology(_load_json(path), str(path)))
        return out

    def samples(self) -> list[dict[str, Any]]:
        """The scene's samples (one per frame), in scene order."""
        return list(self.scene.get("samples", []))

    def sample_datums(self, sample: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Sensor name -> datum of one sample."""
        out = {}
        for key in sample.get("datum_keys", []):
            d = self.datums.get(key)
            if d is not None:
                out[d["id"]["name"]] = d
        return out

    def _file(self, value: Any, what: str) -> Path:
        """A file the scene names, inside the scene's folder (`contained_path`)."""
        return contained_path(self.src, value, str(self.scene_path), what)

    def sample_complete(self, sample: Mapping[str, Any]) -> bool:
        """True when every file a sample's datums name exists."""
        for name, d in self.sample_datums(sample).items():
            kind = "image" if "image" in d["datum"] else "point_cloud"
            body = d["datum"].get(kind) or {}
            if not self._file(body.get("filename", ""), f"{name}.{kind}.filename").is_file():
                return False
        return True

    def rig(self, sample: Mapping[str, Any]) -> SensorRig:
        """The `SensorRig` of a sample's calibration (built once per calibration key)."""
        key = sample["calibration_key"]
        if key not in self._rigs:
            self._rigs[key] = self._build_rig(key, sample)
        return self._rigs[key]

    def _build_rig(self, calib_key: str, sample: Mapping[str, Any]) -> SensorRig:
        path = self._file(f"calibration/{calib_key}.json", "samples[].calibration_key")
        cal = check_calibration(_load_json(path), str(path))
        names = cal["names"]
        datums = self.sample_datums(sample)
        lidars, cameras = [], []
        for i, name in enumerate(names):
            vehicle_from_sensor = _pose(cal["extrinsics"][i], f"{path}: extrinsics[{i}] ({name})")
            datum = datums.get(name, {}).get("datum", {})
            if "point_cloud" in datum:
                pts, _ = read_points(
                    self._file(datum["point_cloud"]["filename"], f"{name}.point_cloud.filename"),
                    columns=self._columns(datum),
                )
                beams = estimate_beams([pts])
                rng = np.linalg.norm(pts[:, :3], axis=1)
                lidars.append(
                    LidarModel(
                        name=name,
                        model="DGP LiDAR (beams estimated from a scan)",
                        vehicle_from_lidar=vehicle_from_sensor,
                        inclinations=beams.inclinations,
                        columns=2048,
                        max_range=float(max(100.0, np.ceil(rng.max() / 10) * 10)),
                        intensity=IntensityEncoding("float", 1.0, "linear"),
                    )
                )
            elif "image" in datum:
                intr = cal["intrinsics"][i]
                if abs(float(intr.get("skew", 0.0))) > 1e-9:
                    raise RigError(f"{path}: intrinsics[{i}] ({name}): skew {intr['skew']} is not supported")
                img = datum["image"]
                cameras.append(
                    CameraModel(
                        name=name,
                        width=int(img["width"]),
                        height=int(img["height"]),
                        fx=float(intr["fx"]),
                        fy=float(intr["fy"]),
                        cx=float(intr["cx"]),
                        cy=float(intr["cy"]),
                        vehicle_from_camera=vehicle_from_sensor @ OPTICAL_FROM_CAMERA,
                    )
                )
        if not lidars:
            raise RigError(f"{path}: no LiDAR datum in the first sample; cannot build the rig")
        return SensorRig(
            name=f"dgp_{self.segment}",
            lidars=tuple(lidars),
            cameras=tuple(cameras),
            ground="estimate",
            source_path=str(path),
        )

    @staticmethod
    def _columns(datum: Mapping[str, Any]) -> tuple[str, ...]:
        fmt = datum["point_cloud"].get("point_format") or ["X", "Y", "Z", "INTENSITY"]
        return tuple(str(c).lower() for c in fmt)

    def read(self, sample: Mapping[str, Any]) -> tuple[FrameRecord, dict[str, int]]:
        """One sample as a FrameRecord (points in the LiDAR frame, boxes in the vehicle frame)."""
        rig = self.rig(sample)
        datums = self.sample_datums(sample)
        lidars, cameras, all_boxes, skipped = {}, {}, [], {}
        world_from_vehicle = np.eye(4)
        for name, d in datums.items():
            body = d["datum"]
            if "point_cloud" in body:
                pc = body["point_cloud"]
                file = self._file(pc["filename"], f"{name}.point_cloud.filename")
                pts, cols = read_points(file, columns=self._columns(d["datum"]))
                if "intensity" not in cols:
                    pts = np.concatenate([pts, np.zeros((len(pts), 1), np.float32)], axis=1)
                    cols = (*cols, "intensity")
                order = [cols.index(c) for c in ("x", "y", "z", "intensity")]
                lidars[name] = LidarPoints(name, pts[:, order], ("x", "y", "z", "intensity"), "sensor")
                vehicle_from_lidar = rig.lidar(name).vehicle_from_lidar
                if "pose" in pc:
                    world_from_vehicle = _pose(pc["pose"], f"{self.scene_path}: {name} pose") @ np.linalg.inv(
                        vehicle_from_lidar
                    )
                for ann in (pc.get("annotations") or {}).values():
                    if "bounding_box_3d" in ann:
                        b, s = self._boxes(self._file(ann, f"{name}.annotations"), vehicle_from_lidar)
                        all_boxes.append(b)
                        for k, v in s.items():
                            skipped[k] = skipped.get(k, 0) + v
            elif "image" in body:
                path = self._file(body["image"]["filename"], f"{name}.image.filename")
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise DataError(f"{path}: unreadable image ({exc})") from exc
                cameras[name] = CameraImage(
                    name, data, "png" if path.suffix.lower() == ".png" else "jpeg", str(path)
                )
        boxes = _concat(all_boxes)
        key = FrameKey(self.segment, _timestamp_us(sample["id"]["timestamp"], str(self.scene_path)))
        return FrameRecord(key, rig, lidars, cameras, boxes, world_from_vehicle), skipped

    def _boxes(self, path: Path, vehicle_from_frame: np.ndarray) -> tuple[Boxes, dict[str, int]]:
        annotations = check_annotations(_load_json(path), str(path))
        rows, classes, ids, npts, skipped = [], [], [], [], {}
        for i, ann in enumerate(annotations):
            cid = int(ann["class_id"])
            name = self.ontology.get(cid)
            if name is None:
                raise DataError(f"{path}: annotations[{i}].class_id {cid} is not in the scene's ontology")
            if name not in self.classes:
                raise DataError(
                    f"{path}: annotations[{i}]: class {name!r} has no mapping; known: "
                    f"{sorted(self.classes)} (pass classes= to map it, None to skip)"
                )
            canon = self.classes[name]
            if canon is None:
                skipped[name] = skipped.get(name, 0) + 1
                continue
            box = ann["box"]
            m = _pose(box["pose"], f"{path}: annotations[{i}].box.pose")
            heading = math.atan2(m[1, 0], m[0, 0])
            rows.append([*m[:3, 3], box["length"], box["width"], box["height"], heading])
            classes.append(canon)
            ids.append(str(ann.get("instance_id", "")))
            npts.append(int(ann.get("num_points", -1)))
        if not rows:
            return Boxes.empty(), skipped
        arr = transform_boxes(vehicle_from_frame, np.asarray(rows))
        arr[:, 6] = wrap_angle(arr[:, 6])
        return Boxes(arr, tuple(classes), tuple(ids), np.asarray(npts)), skipped


def _concat(parts: list[Boxes]) -> Boxes:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Boxes.empty()
    return Boxes(
        np.concatenate([p.boxes for p in parts]),
        sum((p.classes for p in parts), ()),
        sum((p.ids for p in parts), ()),
        np.concatenate([p.num_points for p in parts]),
    )


def import_dgp(
    src: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "train",
    classes: Mapping[str, str | None] | None = None,
) -> dict[str, object]:
    """Import a DGP scene folder into a team-format folder (resumable).

    Samples whose files are absent are skipped and counted. Returns a summary dict.
    """
    from drivetl.data.formats.team import TeamWriter

    scene = DgpScene(src, classes)
    samples = [s for s in scene.samples() if scene.sample_complete(s)]
    summary: dict[str, object] = {
        "frames": 0,
        "skipped_frames": 0,
        "incomplete_samples": len(scene.samples()) - len(samples),
        "boxes": 0,
        "skipped_classes": {},
    }
    if not samples:
        raise DataError(f"{scene.scene_path}: no sample has all its files present")
    rig = scene.rig(samples[0])
    with TeamWriter(out, rig, lidar_format=".pcd") as writer:
        for sample in samples:
            key = FrameKey(scene.segment, _timestamp_us(sample["id"]["timestamp"], str(scene.scene_path)))
            writer.import_frame(key, split, lambda s=sample: scene.read(s), summary)
    return summary
