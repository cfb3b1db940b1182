"""The team format's folder layout and frame-file schema (shared by the reader, writer and validator).

```
root/
  rig.yaml                                   the SensorRig (drivetl.calib schema)
  format.yaml                                optional: class mapping, .bin layout
  splits/<name>.txt                          one frame id `segment/timestamp_us` per line
  frames/<segment>/<timestamp_us>.json       frame file: sensor files + labels (written last)
  lidar/<sensor>/<segment>/<timestamp_us>.{pcd,ply,bin,npy,npz}
  camera/<sensor>/<segment>/<timestamp_us>.{jpg,png}
```
A frame is complete exactly when its frame file exists: writers write every sensor file first
(each atomically) and the frame file last.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivetl._io import read_yaml
from drivetl.data.records import CLASSES, Boxes, FrameKey
from drivetl.errors import DataError, short_repr

FORMAT_NAME = "drivetl-team"
FORMAT_VERSION = 1
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class TeamFormat:
    """Contents of `format.yaml`.

    classes: source class name -> canonical class name, or None to drop that class.
    bin_columns / bin_dtype: layout of `.bin` (and `.npy`) LiDAR files that do not declare their own.
    """

    classes: Mapping[str, str | None] = field(default_factory=dict)
    bin_columns: tuple[str, ...] = ("x", "y", "z", "intensity")
    bin_dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "classes": dict(self.classes),
            "bin": {"columns": list(self.bin_columns), "dtype": self.bin_dtype},
        }


def load_format(root: Path) -> TeamFormat:
    path = root / "format.yaml"
    if not path.is_file():
        return TeamFormat()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    d = read_yaml(text, str(path), DataError) or {}
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a mapping at top level")
    classes = d.get("classes") or {}
    if not isinstance(classes, dict):
        raise DataError(f"{path}: classes must map source names to canonical names")
    for raw, canon in classes.items():
        if canon is not None and canon not in CLASSES:
            raise DataError(
                f"{path}: classes.{raw} maps to {canon!r}, not one of {CLASSES} (or null to drop)"
            )
    b = d.get("bin") or {}
    return TeamFormat(
        {str(k): v for k, v in classes.items()},
        tuple(b.get("columns", ("x", "y", "z", "intensity"))),
        str(b.get("dtype", "float32")),
    )


def check_name(name: str, what: str) -> str:
    """A segment or sensor name usable as a path component; DataError otherwise."""
    if not isinstance(name, str) or not _SAFE.match(name) or name in (".", ".."):
        raise DataError(f"{what} {name!r} must be letters, digits, '_', '-' or '.' (it names a folder)")
    return name


def frame_id(key: FrameKey) -> str:
    return f"{key.segment}/{key.timestamp_us}"


def parse_frame_id(text: str, where: str) -> FrameKey:
    seg, sep, ts = text.strip().rpartition("/")
    if not sep or not seg or not ts.isdigit():
        raise DataError(f"{where}: frame id {text.strip()!r} is not 'segment/timestamp_us'")
    return FrameKey(seg, int(ts))


def frame_file(root: Path, key: FrameKey) -> Path:
    return root / "frames" / key.segment / f"{key.timestamp_us}.json"


def list_frames(root: Path) -> list[FrameKey]:
    keys = []
    for path in sorted((root / "frames").glob("*/*.json")):
        if path.stem.isdigit():
            keys.append(FrameKey(path.parent.name, int(path.stem)))
    return sorted(keys)


def read_splits(root: Path) -> dict[str, list[FrameKey]]:
    out: dict[str, list[FrameKey]] = {}
    for path in sorted((root / "splits").glob("*.txt")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable split file ({exc})") from None
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        out[path.stem] = [parse_frame_id(ln, f"{path}:{i + 1}") for i, ln in enumerate(lines)]
    return out


def read_frame_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{path}: unreadable frame file ({short_repr(str(exc), 200)})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: frame file must hold a JSON object")
    return d


def boxes_to_json(boxes: Boxes) -> list[dict[str, Any]]:
    """Boxes (vehicle frame) as the frame file's `labels.objects` list."""
    objs = []
    for i in range(len(boxes)):
        b = boxes.boxes[i]
        obj: dict[str, Any] = {
            "class": boxes.classes[i],
            "id": boxes.ids[i],
            "center": [float(v) for v in b[:3]],
            "size": [float(v) for v in b[3:6]],
            "heading": float(b[6]),
        }
        if boxes.num_points[i] >= 0:
            obj["num_points"] = int(boxes.num_points[i])
        if boxes.difficulty[i]:
            obj["difficulty"] = int(boxes.difficulty[i])
        if np.isfinite(boxes.speed[i]).all():
            obj["speed"] = [float(v) for v in boxes.speed[i]]
        objs.append(obj)
    return objs


def wrap_angle(a: np.ndarray | float) -> np.ndarray:
    """Angles wrapped into (-pi, pi]."""
    a = np.asarray(a, dtype=np.float64)
    out = np.mod(a + math.pi, 2 * math.pi) - math.pi
    return np.where(out <= -math.pi, out + 2 * math.pi, out)


def _whole(value: Any, where: str, minimum: int, maximum: int) -> int:
    """An integer field of a label (JSON number without a fraction), or DataError naming it."""
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or int(value) != value:
        raise DataError(f"{where}: expected a whole number, got {short_repr(value)}")
    if not minimum <= value <= maximum:
        raise DataError(f"{where}: must be from {minimum} to {maximum}, got {short_repr(value)}")
    return int(value)


def _speed(value: Any, where: str) -> list[float]:
    """A label's optional [vx, vy] (m/s, vehicle frame); NaNs when absent."""
    if value is None:
        return [math.nan, math.nan]
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise DataError(f"{where}: expected [vx, vy], got {short_repr(value)}")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected two numbers, got {short_repr(value)}") from None


def boxes_from_json(
    objects: list[Any], fmt: TeamFormat, vehicle_from_frame: np.ndarray, where: str
) -> tuple[Boxes, dict[str, int]]:
    """Parse `labels.objects` into vehicle-frame Boxes; returns (boxes, dropped count per source class).

    vehicle_from_frame: (4, 4) transform from the frame the boxes are given in to the vehicle frame.
    Raises DataError naming `where` and the object index for malformed objects or unknown classes.
    """
    rows, classes, ids, npts, diff, speed = [], [], [], [], [], []
    dropped: dict[str, int] = {}
    for i, obj in enumerate(objects):
        at = f"{where}: labels.objects[{i}]"
        if not isinstance(obj, dict):
            raise DataError(f"{at}: expected an object")
        raw = obj.get("class")
        if not isinstance(raw, str):
            raise DataError(f"{at}.class must be a class name, got {short_repr(raw)}")
        if raw in CLASSES:
            canon = raw
        elif raw in fmt.classes:
            canon = fmt.classes[raw]
        else:
            raise DataError(
                f"{at}.class {short_repr(raw)} is neither a canonical class {CLASSES} nor mapped in "
                "format.yaml; "
                f"add it under `classes:` in format.yaml (e.g. `{raw}: vehicle`, or `{raw}: null` to drop it)"
            )
        if canon is None:
            dropped[raw] = dropped.get(raw, 0) + 1
            continue
        try:
            c = np.asarray(obj["center"], dtype=np.float64).reshape(3)
            s = np.asarray(obj["size"], dtype=np.float64).reshape(3)
            h = float(obj["heading"])
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(
                f"{at}: needs center [x,y,z], size [length,width,height], heading ({exc})"
            ) from exc
        if not (np.isfinite(c).all() and np.isfinite(s).all() and math.isfinite(h)) or (s <= 0).any():
            raise DataError(f"{at}: center/size/heading must be finite and sizes positive")
        rows.append([*c, *s, h])
        classes.append(canon)
        ids.append(str(obj.get("id", "")))
        npts.append(_whole(obj.get("num_points", -1), f"{at}.num_points", -1, 2**31 - 1))
        diff.append(_whole(obj.get("difficulty", 0), f"{at}.difficulty", 0, 2))
        speed.append(_speed(obj.get("speed"), f"{at}.speed"))
    if not rows:
        return Boxes.empty(), dropped
    arr = np.asarray(rows, dtype=np.float64)
    arr = transform_boxes(vehicle_from_frame, arr)
    return Boxes(
        arr, tuple(classes), tuple(ids), np.asarray(npts), np.asarray(diff), np.asarray(speed)
    ), dropped


def transform_boxes(dst_from_src: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M, 7) boxes moved by a rigid (4, 4) transform: centre transformed, heading from the rotated
    +x direction's projection on the xy plane (exact for transforms that keep +z up)."""
    m = np.asarray(dst_from_src, dtype=np.float64)
    out = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 7)
    if np.allclose(m, np.eye(4)):
        return out
    out[:, :3] = out[:, :3] @ m[:3, :3].T + m[:3, 3]
    d = np.stack([np.cos(out[:, 6]), np.sin(out[:, 6]), np.zeros(len(out))], axis=1) @ m[:3, :3].T
    out[:, 6] = wrap_angle(np.arctan2(d[:, 1], d[:, 0]))
    return out
