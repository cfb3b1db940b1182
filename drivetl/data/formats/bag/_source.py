"""Open a recorded log and stream its messages, whatever the container and the encoding.

| path | container | reader | message encoding |
|---|---|---|---|
| `*.bag` | ROS 1 bag v2.0 | rosbags.rosbag1 | ROS 1 |
| a folder with `metadata.yaml` | ROS 2 bag (sqlite3 or MCAP storage) | rosbags.rosbag2 | CDR |
| `*.db3` | one ROS 2 sqlite3 storage file | rosbags.rosbag2 | CDR |
| `*.mcap` | a standalone MCAP file | mcap | per channel: `ros1` or `cdr` |

Message types come from the definitions the log embeds (ROS 1 bags and MCAP always carry them);
a ROS 2 bag without them falls back to rosbags' built-in ROS 2 types. Type names are normalized to
`pkg/msg/Name`. Messages are yielded in log-time order, deserialized one at a time (bounded memory).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivetl.errors import DataError


@dataclass(frozen=True)
class Message:
    """One deserialized message: its topic, type (`pkg/msg/Name`), log time (ns) and index on its topic."""

    topic: str
    msgtype: str
    log_time_ns: int
    index: int
    msg: Any


def normalize_type(name: str) -> str:
    """`sensor_msgs/PointCloud2` and `sensor_msgs/msg/PointCloud2` -> `sensor_msgs/msg/PointCloud2`."""
    parts = name.strip().split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return name.strip()


def log_kind(path: Path) -> str:
    """'ros1', 'ros2' or 'mcap' for a log path; DataError for anything else."""
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return "ros2"
        raise DataError(f"{path}: a folder without metadata.yaml is not a ROS 2 bag")
    if not path.is_file():
        raise DataError(f"{path}: no such log file or folder")
    suffix = path.suffix.lower()
    if suffix == ".bag":
        return "ros1"
    if suffix == ".mcap":
        return "mcap"
    if suffix == ".db3":
        return "ros2"
    raise DataError(
        f"{path}: unknown log type {suffix!r}; give a .bag, a .mcap, a .db3 or a ROS 2 bag folder"
    )


def _register(typestore: Any, definitions: Iterable[tuple[str, str, str]], where: str) -> None:
    """Register (name, format 'msg'|'idl', text) definitions in a rosbags typestore."""
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    types: dict[str, Any] = {}
    for name, fmt, text in definitions:
        try:
            types.update(get_types_from_idl(text) if fmt == "idl" else get_types_from_msg(text, name))
        except Exception as exc:  # rosbags raises several parser error types
            raise DataError(f"{where}: cannot parse the embedded definition of {name} ({exc})") from exc
    known = set(typestore.fielddefs)
    typestore.register({k: v for k, v in types.items() if k not in known})


class _BoundedFile(io.BufferedReader):
    """A log file whose ``read(n)`` asks for at most the bytes left in it. Python's buffered
    ``read(n)`` reserves n bytes before reading, and the log readers pass lengths read from the file
    as they are: a damaged 4- or 8-byte length in a small file would reserve gigabytes."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(io.FileIO(os.fspath(path), "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:  # noqa: D102 - io.BufferedReader.read, bounded
        if size is not None and size > 0:
            size = min(size, max(0, self._size - self.tell()))
        return super().read(size)


class _BoundedPath(type(Path())):  # type: ignore[misc]
    """A path whose binary `open` is a `_BoundedFile` (rosbags' ROS 1 reader opens its `path` itself)."""

    def open(self, mode: str = "r", *args: Any, **kwargs: Any) -> Any:  # noqa: D102 - Path.open, bounded
        return _BoundedFile(self) if mode == "rb" else super().open(mode, *args, **kwargs)


class LogReader:
    """A log opened for reading: `topics` (topic -> type) and `messages(topics)`; a context manager."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.kind = log_kind(self.path)
        self.topics: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._reader: Any = None
        self._file: Any = None
        self._typestores: dict[str, Any] = {}

    def __enter__(self) -> LogReader:
        try:
            self._open()
        except DataError:
            self.close()
            raise
        except Exception as exc:  # the libraries' own error types: report them as bad input
            self.close()
            raise DataError(f"{self.path}: cannot open the log ({type(exc).__name__}: {exc})") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying reader or file."""
        if self._reader is not None and self.kind != "mcap":
            with contextlib.suppress(Exception):  # a reader whose open() failed is not open
                self._reader.close()
        if self._file is not None:
            self._file.close()
        self._reader = self._file = None

    def _open(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        if self.kind in ("ros1", "ros2"):
            if self.kind == "ros1":
                from rosbags.rosbag1 import Reader
            else:
                from rosbags.rosbag2 import Reader
            self._reader = Reader(self.path)
            if self.kind == "ros1":
                self._reader.path = _BoundedPath(self.path)
            self._reader.open()
            store = get_typestore(Stores.EMPTY if self.kind == "ros1" else Stores.LATEST)
            defs = []
            for c in self._reader.connections:
                self.topics[c.topic] = c.msgtype
                self.counts[c.topic] = self.counts.get(c.topic, 0) + int(c.msgcount)
                fmt = getattr(c.msgdef.format, "name", "NONE")
                if fmt != "NONE" and c.msgdef.data:
                    defs.append((c.msgtype, "idl" if fmt == "IDL" else "msg", c.msgdef.data))
            _register(store, defs, str(self.path))
            self._typestores["ros1" if self.kind == "ros1" else "cdr"] = store
            return
        from mcap.reader import make_reader

        self._file = _BoundedFile(self.path)
        self._reader = make_reader(self._file)
        summary = self._reader.get_summary()
        if summary is None:
            raise DataError(f"{self.path}: the MCAP file has no summary section (truncated?); re-record it")
        stats = summary.statistics.channel_message_counts if summary.statistics else {}
        defs: dict[str, list[tuple[str, str, str]]] = {"ros1": [], "cdr": []}
        for cid, ch in summary.channels.items():
            schema = summary.schemas.get(ch.schema_id)
            if schema is None or ch.message_encoding not in defs:
                continue
            name = normalize_type(schema.name)
            self.topics[ch.topic] = name
            self.counts[ch.topic] = self.counts.get(ch.topic, 0) + int(stats.get(cid, 0))
            fmt = "idl" if schema.encoding in ("ros2idl", "omgidl") else "msg"
            defs[ch.message_encoding].append((name, fmt, schema.data.decode()))
        for enc, items in defs.items():
            if items:
                store = get_typestore(Stores.EMPTY)
                _register(store, items, str(self.path))
                self._typestores[enc] = store

    def messages(self, topics: Iterable[str]) -> Iterator[Message]:
        """Deserialized messages of `topics`, in log-time order (DataError names the bad message)."""
        wanted = set(topics)
        index: dict[str, int] = {}
        for topic, msgtype, t, raw, enc in self._raw(wanted):
            i = index.get(topic, 0)
            index[topic] = i + 1
            store = self._typestores[enc]
            try:
                msg = (
                    store.deserialize_ros1(raw, msgtype)
                    if enc == "ros1"
                    else store.deserialize_cdr(raw, msgtype)
                )
            except Exception as exc:
                raise DataError(
                    f"{self.path}: topic {topic} message {i} ({msgtype}) cannot be decoded "
                    f"({type(exc).__name__}: {str(exc)[:80]}); the log is damaged or its type "
                    "definition is wrong"
                ) from exc
            yield Message(topic, msgtype, int(t), i, msg)

    def _raw(self, wanted: set[str]) -> Iterator[tuple[str, str, int, Any, str]]:
        try:
            if self.kind in ("ros1", "ros2"):
                enc = "ros1" if self.kind == "ros1" else "cdr"
                conns = [c for c in self._reader.connections if c.topic in wanted]
                if not conns:
                    return
                for c, t, raw in self._reader.messages(connections=conns):
                    yield c.topic, c.msgtype, t, raw, enc
                return
            for schema, ch, m in self._reader.iter_messages(topics=sorted(wanted)):
                if schema is None or ch.message_encoding not in self._typestores:
                    continue
                yield ch.topic, normalize_type(schema.name), m.log_time, m.data, ch.message_encoding
        except DataError:
            raise
        except Exception as exc:  # truncated chunks, bad compression, ...
            raise DataError(
                f"{self.path}: the log cannot be read past this point "
                f"({type(exc).__name__}: {str(exc)[:100]}); "
                "it may be truncated: re-copy it, or reindex it (rosbag reindex / mcap recover)"
            ) from exc
