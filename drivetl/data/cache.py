"""The training cache: `FrameRecord`s in memory-mapped shards with a JSON index (docs/cache_format.md).

Layout of a cache folder::

    index.json                 format, version, and per shard: name, frame count, source, frame keys
    shards/<name>.bin          the shard's arrays and JPEG bytes, each 64-byte aligned
    shards/<name>.json         the shard's metadata: source file, rigs, and per frame where its data lies

A shard is written atomically (its .bin, then its .json, each to a temporary name then renamed); the
.json's presence marks a finished shard, so an interrupted conversion resumes by skipping finished
shards, and a reader never sees half a shard. `TrainingCache(root)[i]` maps the shard's .bin once
and returns a `FrameRecord` whose point arrays are read-only views into the map (copy before
modifying them); images stay JPEG bytes.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from drivetl._io import atomic_write, atomic_write_text
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.errors import DataError

FORMAT = "drivetl-cache"
VERSION = 1
_ALIGN = 64


def _nan_to_none(values: np.ndarray) -> list:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(values, np.float64)]


class ShardWriter:
    """Write one shard: ``add(record)`` per frame, then ``close()`` (or ``abort()``).

    source: free-form facts about where the shard comes from (file path, size), kept in its .json.
    """

    def __init__(self, root: str | os.PathLike, name: str, source: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.source = dict(source or {})
        shards = self.root / "shards"
        self._bin_ctx = atomic_write(shards / f"{name}.bin", "wb")
        self._bin: BinaryIO | None = self._bin_ctx.__enter__()
        self._pos = 0
        self._frames: list[dict[str, Any]] = []
        self._rigs: list[dict[str, Any]] = []
        self._rig_ids: dict[int, int] = {}
        self._rig_json: dict[str, int] = {}

    def _put(self, data: bytes | memoryview) -> int:
        assert self._bin is not None
        pad = (-self._pos) % _ALIGN
        if pad:
            self._bin.write(b"\0" * pad)
            self._pos += pad
        offset = self._pos
        self._bin.write(data)
        self._pos += len(data)
        return offset

    def _rig_index(self, rig) -> int:
        key = id(rig)
        if key not in self._rig_ids:
            from drivetl.calib import rig_to_dict

            d = rig_to_dict(rig)
            text = json.dumps(d, sort_keys=True)
            if text not in self._rig_json:
                self._rig_json[text] = len(self._rigs)
                self._rigs.append(d)
            self._rig_ids[key] = self._rig_json[text]
        return self._rig_ids[key]

    def add(self, record: FrameRecord) -> None:
        """Append one frame (points as float32, images as their encoded bytes, boxes inline)."""
        lidars = []
        for name, lp in record.lidars.items():
            pts = np.ascontiguousarray(lp.points, dtype="<f4")
            lidars.append(
                {
                    "sensor": name,
                    "columns": list(lp.columns),
                    "frame": lp.frame,
                    "rows": int(pts.shape[0]),
                    "offset": self._put(memoryview(pts).cast("B")),
                }
            )
        cameras = [
            {"sensor": name, "encoding": img.encoding, "offset": self._put(img.data), "length": len(img.data)}
            for name, img in record.cameras.items()
        ]
        b = record.boxes
        self._frames.append(
            {
                "key": [record.key.segment, int(record.key.timestamp_us)],
                "rig": self._rig_index(record.rig),
                "world_from_vehicle": np.asarray(record.world_from_vehicle, np.float64).reshape(-1).tolist(),
                "lidars": lidars,
                "cameras": cameras,
                "boxes": {
                    "boxes": b.boxes.tolist(),
                    "classes": list(b.classes),
                    "ids": list(b.ids),
                    "num_points": b.num_points.tolist(),
                    "difficulty": b.difficulty.tolist(),
                    "speed": _nan_to_none(b.speed),
                },
            }
        )

    @property
    def count(self) -> int:
        """Frames written into the shard so far."""
        return len(self._frames)

    def close(self) -> dict[str, Any]:
        """Finish the shard: rename its .bin into place, then write its .json. Returns the index entry."""
        if self._bin is None:
            raise ValueError(f"shard {self.name} is closed")
        self._bin = None
        self._bin_ctx.__exit__(None, None, None)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "source": self.source,
            "bytes": self._pos,
            "rigs": self._rigs,
            "frames": self._frames,
        }
        atomic_write_text(self.root / "shards" / f"{self.name}.json", json.dumps(meta))
        return _index_entry(meta)

    def abort(self) -> None:
        """Discard the shard (nothing is left behind)."""
        if self._bin is not None:
            self._bin = None
            err = RuntimeError("aborted")
            try:
                self._bin_ctx.__exit__(RuntimeError, err, None)
            except RuntimeError:
                pass


def _index_entry(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": meta["name"],
        "frames": len(meta["frames"]),
        "source": meta["source"],
        "keys": [f["key"] for f in meta["frames"]],
    }


def shard_is_finished(root: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """The shard's metadata if its .json exists and its .bin has the recorded size, else None."""
    shards = Path(root) / "shards"
    try:
        meta = json.loads((shards / f"{name}.json").read_text(encoding="utf-8"))
        if (shards / f"{name}.bin").stat().st_size != meta["bytes"]:
            return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def write_index(root: str | os.PathLike) -> dict[str, Any]:
    """(Re)build index.json from the finished shards' metadata, shards sorted by name."""
    root = Path(root)
    entries = []
    for path in sorted((root / "shards").glob("*.json")):
        meta = shard_is_finished(root, path.stem)
        if meta is not None:
            entries.append(_index_entry(meta))
    index = {
        "format": FORMAT,
        "version": VERSION,
        "frames": sum(e["frames"] for e in entries),
        "shards": entries,
    }
    atomic_write_text(root / "index.json", json.dumps(index))
    return index


@dataclass
class _Shard:
    name: str
    meta: dict[str, Any] | None = None
    buf: mmap.mmap | None = None
    pid: int = -1
    rigs: list | None = None


class TrainingCache:
    """Random access to the frames of a training cache folder (see module docstring).

    ``len(cache)``, ``cache[i] -> FrameRecord``, ``cache.keys`` (FrameKey per index). Safe to use from
    DataLoader worker processes: each process maps the shard files itself on first access.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        index_path = self.root / "index.json"
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(
                f"{index_path}: no training cache here (run `drivetl convert` to make one)"
            ) from None
        except ValueError as exc:
            raise DataError(
                f"{index_path}: not valid JSON ({exc}); rerun `drivetl convert` to rebuild it"
            ) from None
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise DataError(
                f"{index_path}: not a {FORMAT} v{VERSION} index (got {index.get('format')!r} "
                f"v{index.get('version')!r}); rebuild it with `drivetl convert`"
            )
        self._shards = [_Shard(e["name"]) for e in index["shards"]]
        self._starts: list[int] = []
        keys: list[FrameKey] = []
        for e in index["shards"]:
            self._starts.append(len(keys))
            keys.extend(FrameKey(seg, int(ts)) for seg, ts in e["keys"])
        self.keys: tuple[FrameKey, ...] = tuple(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[FrameRecord]:
        for i in range(len(self)):
            yield self[i]

    def _open(self, shard: _Shard) -> _Shard:
        if shard.meta is None:
            path = self.root / "shards" / f"{shard.name}.json"
            try:
                shard.meta = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{path}: cannot read shard metadata ({exc}); rerun `drivetl convert`"
                ) from None
            shard.rigs = [None] * len(shard.meta["rigs"])
        if shard.buf is None or shard.pid != os.getpid():
            path = self.root / "shards" / f"{shard.name}.bin"
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size != shard.meta["bytes"]:
                        raise DataError(
                            f"{path}: {size} bytes but its metadata says {shard.meta['bytes']}; "
                            "the shard is damaged, delete it and rerun `drivetl convert`"
                        )
                    shard.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            except FileNotFoundError:
                raise DataError(f"{path}: shard data missing; rerun `drivetl convert`") from None
            shard.pid = os.getpid()
        return shard

    def _rig(self, shard: _Shard, i: int):
        assert shard.rigs is not None and shard.meta is not None
        if shard.rigs[i] is None:
            from drivetl.calib import rig_from_dict

            shard.rigs[i] = rig_from_dict(
                shard.meta["rigs"][i], f"{self.root}/shards/{shard.name}.json: rigs[{i}]"
            )
        return shard.rigs[i]

    def __getitem__(self, i: int) -> FrameRecord:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for a cache of {n} frames")
        i %= n
        s = bisect.bisect_right(self._starts, i) - 1
        shard = self._open(self._shards[s])
        meta = shard.meta["frames"][i - self._starts[s]]
        buf = shard.buf
        lidars = {}
        for lp in meta["lidars"]:
            cols = tuple(lp["columns"])
            count = lp["rows"] * len(cols)
            pts = (
                np.frombuffer(buf, dtype="<f4", count=count, offset=lp["offset"])
                if count
                else np.zeros(0, np.float32)
            ).reshape(lp["rows"], len(cols))
            lidars[lp["sensor"]] = LidarPoints(lp["sensor"], pts, cols, lp["frame"])
        cameras = {
            c["sensor"]: CameraImage(
                c["sensor"], bytes(buf[c["offset"] : c["offset"] + c["length"]]), c["encoding"]
            )
            for c in meta["cameras"]
        }
        b = meta["boxes"]
        speed = np.array([[np.nan if v is None else v for v in row] for row in b["speed"]], np.float32)
        boxes = Boxes(
            np.asarray(b["boxes"], np.float64).reshape(-1, 7),
            tuple(b["classes"]),
            tuple(b["ids"]),
            np.asarray(b["num_points"], np.int32),
            np.asarray(b["difficulty"], np.int8),
            speed.reshape(-1, 2),
        )
        return FrameRecord(
            key=self.keys[i],
            rig=self._rig(shard, meta["rig"]),
            lidars=lidars,
            cameras=cameras,
            boxes=boxes,
            world_from_vehicle=np.asarray(meta["world_from_vehicle"]).reshape(4, 4),
        )

    def index_of(self, key: FrameKey) -> int:
        """Index of the frame with `key` (KeyError when absent)."""
        try:
            return self.keys.index(key)
        except ValueError:
            raise KeyError(f"{self.root}: no frame {key}") from None

    def __getstate__(self) -> dict[str, Any]:  # pickled into DataLoader workers without open maps
        state = dict(self.__dict__)
        state["_shards"] = [_Shard(s.name) for s in self._shards]
        return state


def write_records(
    root: str | os.PathLike,
    name: str,
    records: Sequence[FrameRecord] | Iterator[FrameRecord],
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `records` as one shard `name` of the cache at `root` and refresh index.json."""
    writer = ShardWriter(root, name, source)
    try:
        for record in records:
            writer.add(record)
    except BaseException:
        writer.abort()
        raise
    entry = writer.close()
    write_index(root)
    return entry
