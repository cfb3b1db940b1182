"""Reading and writing a team-format folder: `TeamWriter`, `TeamReader`, `write_team`.

`TeamWriter` writes it (the simulator and the importers use it), `TeamReader` reads it back into
`FrameRecord`s (raw intensity as recorded, points in the frame each frame file declares). The
layout and frame-file schema are described in `drivetl.data.formats.team._layout` and
docs/team_format.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from drivetl._io import atomic_write_bytes, atomic_write_text, remove_stale_partials
from drivetl.data.formats._paths import contained_path
from drivetl.data.formats.pointfile import SUFFIXES, read_points, write_points
from drivetl.data.formats.team._layout import (
    TeamFormat,
    boxes_from_json,
    boxes_to_json,
    check_name,
    frame_file,
    frame_id,
    list_frames,
    load_format,
    read_frame_json,
    read_splits,
)
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.errors import DataError, RigError, short_repr

if TYPE_CHECKING:
    from drivetl.calib import SensorRig

__all__ = ["TeamReader", "TeamWriter", "write_team"]

_IMAGE_SUFFIX = {"jpeg": ".jpg", "png": ".png"}


class TeamWriter:
    """Write frames into a team-format folder; a context manager.

    ``with TeamWriter(root, rig) as w: w.write(record, split="train")``. Each frame's sensor files
    are written atomically, then its frame file (which marks the frame complete). On close, the
    split files, `rig.yaml` and `format.yaml` are written. Re-opening a folder resumes it: frames
    already complete are skipped (`has(key)`), and existing split entries are kept.

    lidar_format: suffix of the LiDAR files (".pcd", ".ply", ".bin", ".npy", ".npz").
    classes: optional source -> canonical class mapping stored in format.yaml.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        rig: SensorRig,
        *,
        lidar_format: str = ".pcd",
        classes: Mapping[str, str | None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.rig = rig
        if not lidar_format.startswith("."):
            lidar_format = "." + lidar_format
        if lidar_format not in SUFFIXES:
            raise DataError(f"TeamWriter: lidar_format {lidar_format!r} is not one of {SUFFIXES}")
        self.lidar_format = lidar_format
        self.format = TeamFormat(dict(classes or {}))
        self._splits: dict[str, list[FrameKey]] = {}
        self._open = False
        self.written = 0
        self.skipped = 0

    def __enter__(self) -> TeamWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        self.stale_removed = remove_stale_partials(self.root)  # a killed run's half-written files
        self._splits = read_splits(self.root)
        self._open = True
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def has(self, key: FrameKey) -> bool:
        """True when `key`'s frame is complete in the folder (its frame file exists)."""
        return frame_file(self.root, key).is_file()

    def add_to_split(self, key: FrameKey, split: str) -> None:
        """List `key` in `split` (written on close) without writing any frame data."""
        check_name(key.segment, "segment")
        check_name(split, "split")
        members = self._splits.setdefault(split, [])
        if key not in members:
            members.append(key)

    def import_frame(
        self,
        key: FrameKey,
        split: str,
        read: Callable[[], tuple[FrameRecord, dict[str, int]]],
        summary: dict[str, Any],
    ) -> None:
        """One frame of an importer (KITTI, DGP): listed in `split`; read and written unless the
        folder already has it (a resumed import). `read()` returns the record and the counts of
        source classes it left out; `summary` counts frames, skipped_frames, boxes and
        skipped_classes."""
        if self.has(key):
            self.add_to_split(key, split)
            summary["skipped_frames"] += 1
            return
        record, skipped = read()
        self.write(record, split)
        summary["frames"] += 1
        summary["boxes"] += len(record.boxes)
        for k, v in skipped.items():
            summary["skipped_classes"][k] = summary["skipped_classes"].get(k, 0) + v

    def write(self, record: FrameRecord, split: str = "train") -> bool:
        """Write one frame and list it in `split`; returns False when it was already complete."""
        if not self._open:
            raise RuntimeError("TeamWriter.write outside its `with` block")
        key = record.key
        self.add_to_split(key, split)
        if self.has(key):
            self.skipped += 1
            return False
        ts = key.timestamp_us
        lidars: dict[str, dict] = {}
        for name, lp in record.lidars.items():
            check_name(name, "lidar")
            rel = f"lidar/{name}/{key.segment}/{ts}{self.lidar_format}"
            write_points(self.root / rel, lp.points, lp.columns)
            lidars[name] = {"file": rel, "frame": lp.frame, "columns": list(lp.columns)}
        cameras: dict[str, dict] = {}
        for name, img in record.cameras.items():
            check_name(name, "camera")
            rel = f"camera/{name}/{key.segment}/{ts}{_IMAGE_SUFFIX[img.encoding]}"
            atomic_write_bytes(self.root / rel, img.data)
            cameras[name] = {"file": rel}
        doc = {
            "segment": key.segment,
            "timestamp_us": ts,
            "world_from_vehicle": np.asarray(record.world_from_vehicle).tolist(),
            "lidars": lidars,
            "cameras": cameras,
            "labels": {"frame": "vehicle", "objects": boxes_to_json(record.boxes)},
        }
        atomic_write_text(frame_file(self.root, key), json.dumps(doc, indent=1) + "\n")
        self.written += 1
        return True

    def close(self) -> None:
        """Write split files, rig.yaml and format.yaml (also after an interruption: resumable)."""
        if not self._open:
            return
        self._open = False
        from drivetl.calib import save_rig

        for name, keys in self._splits.items():
            text = "".join(frame_id(k) + "\n" for k in keys)
            atomic_write_text(self.root / "splits" / f"{name}.txt", text)
        save_rig(self.rig, self.root / "rig.yaml")
        fmt_path = self.root / "format.yaml"
        if self.format.classes or not fmt_path.exists():
            atomic_write_text(fmt_path, yaml.safe_dump(self.format.to_dict(), sort_keys=False))


class TeamReader:
    """Read a team-format folder: ``len(r)``, ``r[i]`` / ``r[key]`` -> FrameRecord, iteration, `.rig`.

    `split(name)` returns a reader over that split's frames. Records hold raw intensity and points in
    the frame each frame file declares (`LidarPoints.frame`); boxes are moved into the vehicle frame.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        keys: Sequence[FrameKey] | None = None,
        *,
        rig=None,
        fmt: TeamFormat | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: team-format folder not found")
        if rig is None:
            from drivetl.calib import load_rig

            rig_path = self.root / "rig.yaml"
            if not rig_path.is_file():
                raise RigError(f"{rig_path}: missing; every team-format folder needs its rig file")
            rig = load_rig(rig_path)
        self.rig = rig
        self.format = fmt if fmt is not None else load_format(self.root)
        self.keys: list[FrameKey] = list(keys) if keys is not None else list_frames(self.root)
        self.dropped: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[FrameRecord]:
        for key in self.keys:
            yield self.read(key)

    def __getitem__(self, item: int | FrameKey) -> FrameRecord:
        if isinstance(item, FrameKey):
            return self.read(item)
        return self.read(self.keys[item])

    def splits(self) -> list[str]:
        return sorted(read_splits(self.root))

    def split(self, name: str) -> TeamReader:
        """A reader over the frames listed in `splits/<name>.txt`."""
        splits = read_splits(self.root)
        if name not in splits:
            raise DataError(
                f"{self.root / 'splits' / (name + '.txt')}: no such split (have {sorted(splits)})"
            )
        missing = [k for k in splits[name] if not frame_file(self.root, k).is_file()]
        if missing:
            raise DataError(
                f"{self.root / 'splits' / (name + '.txt')}: frame {frame_id(missing[0])} has no "
                f"frame file ({len(missing)} missing); re-run the writer to complete the folder"
            )
        return TeamReader(self.root, splits[name], rig=self.rig, fmt=self.format)

    def read(self, key: FrameKey) -> FrameRecord:
        path = frame_file(self.root, key)
        if not path.is_file():
            raise DataError(f"{path}: frame {key} not found in {self.root}")
        doc = read_frame_json(path)
        rel = path.relative_to(self.root)
        lidars = {}
        for name, spec in _mapping(doc, "lidars", rel).items():
            lidars[name] = self._read_lidar(name, spec, rel)
        cameras = {}
        for name, spec in _mapping(doc, "cameras", rel).items():
            cameras[name] = self._read_camera(name, spec, rel)
        boxes, dropped = self._boxes(_mapping(doc, "labels", rel), rel)
        for k, v in dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + v
        return FrameRecord(key, self.rig, lidars, cameras, boxes, _pose(doc, rel))

    def check_labels(self) -> None:
        """Read every frame file's labels and pose, without points or images, so that a bad label
        stops a training run before its first step; DataError naming the frame file and key."""
        for key in self.keys:
            path = frame_file(self.root, key)
            if not path.is_file():
                raise DataError(f"{path}: frame {key} not found in {self.root}")
            doc = read_frame_json(path)
            rel = path.relative_to(self.root)
            self._boxes(_mapping(doc, "labels", rel), rel)
            _pose(doc, rel)

    def _read_lidar(self, name: str, spec: Mapping, rel: Path) -> LidarPoints:
        if not isinstance(spec, Mapping) or "file" not in spec:
            raise DataError(f"{rel}: lidars.{name} needs a 'file' entry")
        self._sensor_lookup("lidar", name, rel)
        file = contained_path(self.root, spec["file"], str(rel), f"lidars.{name}.file")
        columns = spec.get("columns") or self.format.bin_columns
        pts, cols = read_points(file, columns=columns, dtype=self.format.bin_dtype)
        if "intensity" not in cols:
            pts = np.concatenate([pts, np.zeros((len(pts), 1), np.float32)], axis=1)
            cols = (*cols, "intensity")
        order = [cols.index(c) for c in ("x", "y", "z", "intensity")]
        rest = [i for i, c in enumerate(cols) if c not in ("x", "y", "z", "intensity")]
        frame = spec.get("frame", "sensor")
        if frame not in ("vehicle", "sensor"):
            raise DataError(f"{rel}: lidars.{name}.frame must be 'vehicle' or 'sensor', got {frame!r}")
        return LidarPoints(name, pts[:, order + rest], tuple(cols[i] for i in order + rest), frame)

    def _read_camera(self, name: str, spec: Mapping, rel: Path) -> CameraImage:
        if not isinstance(spec, Mapping) or "file" not in spec:
            raise DataError(f"{rel}: cameras.{name} needs a 'file' entry")
        self._sensor_lookup("camera", name, rel)
        file = contained_path(self.root, spec["file"], str(rel), f"cameras.{name}.file")
        if not file.is_file():
            raise DataError(f"{file}: camera image referenced by {rel} not found")
        suffix = file.suffix.lower()
        if suffix not in (".jpg", ".jpeg", ".png"):
            raise DataError(f"{file}: camera images must be .jpg or .png")
        return CameraImage(name, file.read_bytes(), "png" if suffix == ".png" else "jpeg", str(file))

    def _sensor_lookup(self, kind: str, name: str, rel: Path):
        try:
            return self.rig.lidar(name) if kind == "lidar" else self.rig.camera(name)
        except (RigError, KeyError) as exc:
            raise DataError(f"{rel}: {kind} {name!r} is not in rig.yaml ({exc})") from exc

    def _boxes(self, labels: Mapping, rel: Path) -> tuple[Boxes, dict[str, int]]:
        frame = labels.get("frame", "vehicle")
        if frame == "vehicle":
            m = np.eye(4)
        else:
            sensor = None
            for kind in ("lidar", "camera"):
                try:
                    sensor = self.rig.lidar(frame) if kind == "lidar" else self.rig.camera(frame)
                    break
                except (RigError, KeyError):
                    continue
            if sensor is None:
                raise DataError(
                    f"{rel}: labels.frame {frame!r} is neither 'vehicle' nor a sensor of rig.yaml"
                )
            m = getattr(sensor, "vehicle_from_lidar", None)
            if m is None:
                m = sensor.vehicle_from_camera
        return boxes_from_json(list(labels.get("objects") or []), self.format, m, str(rel))


def _mapping(doc: Mapping, key: str, rel: Path) -> Mapping:
    """`doc[key]` as a mapping ({} when absent); DataError naming the frame file otherwise."""
    value = doc.get(key) or {}
    if not isinstance(value, Mapping):
        raise DataError(f"{rel}: {key} must be a JSON object, got {short_repr(value)}")
    return value


def _pose(doc: Mapping, rel: Path) -> np.ndarray:
    """The frame's (4, 4) world_from_vehicle (identity when absent), finite."""
    pose = doc.get("world_from_vehicle")
    try:
        pose = np.eye(4) if pose is None else np.asarray(pose, dtype=np.float64).reshape(4, 4)
    except (ValueError, TypeError):
        raise DataError(f"{rel}: world_from_vehicle must be a 4x4 matrix of numbers") from None
    if not np.isfinite(pose).all():
        raise DataError(
            f"{rel}: world_from_vehicle has NaN or inf entries; write the frame's pose or omit it"
        )
    return pose


def write_team(root: str | os.PathLike, rig, records: Iterable[tuple[FrameRecord, str]], **kwargs) -> int:
    """Write (record, split) pairs into a team folder; returns the number of frames written."""
    with TeamWriter(root, rig, **kwargs) as writer:
        for record, split in records:
            writer.write(record, split)
    return writer.written
