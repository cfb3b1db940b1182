"""Waymo v1 TFRecords and v2 folders -> the training cache, one shard per source, in parallel processes,
resumable. A source is one TFRecord file, or one segment of a v2 dataset folder."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from drivetl._io import die_with_parent, remove_stale_partials
from drivetl.errors import DataError

SUFFIXES = (".tfrecord", ".tfrecords")


class Source(NamedTuple):
    """What one shard is converted from: a v1 TFRecord file (segment None), or one segment of a v2
    dataset folder (`path` the folder)."""

    path: Path
    segment: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.segment is None else f"{self.path} (segment {self.segment})"

    @property
    def shard(self) -> str:
        """The shard's name (see `shard_name`)."""
        return shard_name(self.path, self.segment)

    def size(self) -> int:
        """Bytes of the source (a v2 segment: of its component files), to tell a changed source."""
        if self.segment is None:
            return self.path.stat().st_size
        from drivetl.data.formats.waymo._v2_files import component_path, present_components

        files = (component_path(self.path, c, self.segment) for c in present_components(self.path))
        return sum(f.stat().st_size for f in files if f.is_file())


def find_sources(sources: Sequence[str | os.PathLike]) -> list[Source]:
    """TFRecord files named directly, or found (recursively) in the folders named, and every segment of
    the Waymo v2 folders named; sorted, no repeats."""
    from drivetl.data.formats.waymo._v2_files import find_segments, is_v2_folder

    found: list[Source] = []
    for src in sources:
        p = Path(src)
        if is_v2_folder(p):
            found.extend(Source(p, seg) for seg in find_segments(p))
        elif p.is_dir():
            files = sorted(
                f for f in p.rglob("*") if f.is_file() and (f.suffix in SUFFIXES or ".tfrecord" in f.name)
            )
            if not files:
                raise DataError(
                    f"{p}: no .tfrecord files in this folder, and not a Waymo v2 folder (lidar/, "
                    "vehicle_pose/, ... of Parquet files)"
                )
            found.extend(Source(f) for f in files)
        elif p.is_file():
            found.append(Source(p))
        else:
            raise DataError(f"{p}: no such file or folder")
    seen: set[tuple[Path, str | None]] = set()
    out = []
    for f in found:
        r = (f.path.resolve(), f.segment)
        if r not in seen:
            seen.add(r)
            out.append(f)
    return out


def shard_name(path: Path, segment: str | None = None) -> str:
    """A shard name that is readable (the file's stem, or the v2 segment) and unique (a hash of the
    absolute path, and the segment)."""
    key = str(path.resolve()) if segment is None else f"{path.resolve()}::{segment}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    stem = path.name.split(".tfrecord")[0] if segment is None else segment
    return f"{stem}-{digest}"


@dataclass
class FileResult:
    """What converting one file did."""

    source: str
    shard: str
    frames: int = 0
    points: int = 0
    skipped_records: int = 0
    seconds: float = 0.0
    resumed: bool = False
    error: str | None = None


def convert_file(
    path: str,
    root: str,
    *,
    skip_corrupt: bool = False,
    threads: int = 1,
    drop_no_label_zone: bool = False,
    segment: str | None = None,
) -> FileResult:
    """Convert one Waymo TFRecord (or, with `segment`, one segment of the v2 folder `path`) into one
    shard of the cache at `root` (skipped if already finished)."""
    from drivetl.data.cache import ShardWriter, shard_is_finished
    from drivetl.data.formats.waymo._reader import WaymoV1Reader

    src = Source(Path(path), segment)
    name = src.shard
    result = FileResult(source=str(src), shard=name)
    try:
        size = src.size()
    except OSError as exc:
        result.error = f"{src}: cannot read ({exc.strerror or exc})"
        return result
    meta = shard_is_finished(root, name)
    if meta is not None and meta.get("source", {}).get("size") == size:
        result.frames = len(meta["frames"])
        result.resumed = True
        return result
    t0 = time.perf_counter()
    info = {"path": str(src.path.resolve()), "size": size, "reader": "waymo_v1"}
    try:
        if segment is None:
            reader = WaymoV1Reader(src.path, skip_corrupt=skip_corrupt, threads=threads)
        else:
            from drivetl.data.formats.waymo._v2_reader import WaymoV2Reader

            reader = WaymoV2Reader(src.path, segments=[segment], skip_corrupt=skip_corrupt, threads=threads)
            info.update(reader="waymo_v2", segment=segment)
    except DataError as exc:
        result.error = str(exc)
        return result
    writer = ShardWriter(root, name, info)
    try:
        for frame in reader:
            record = frame.to_record(drop_no_label_zone=drop_no_label_zone)
            writer.add(record)
            result.points += sum(len(lp) for lp in record.lidars.values())
    except DataError as exc:
        writer.abort()
        result.error = str(exc)
        return result
    except BaseException:
        writer.abort()
        raise
    writer.close()
    result.frames = writer.count
    result.skipped_records = reader.skipped
    result.seconds = time.perf_counter() - t0
    return result


@dataclass
class ConvertSummary:
    """The outcome of `convert_waymo`."""

    out: str
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.error]

    @property
    def frames(self) -> int:
        return sum(f.frames for f in self.files if not f.error)


def convert_waymo(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    workers: int = 1,
    skip_corrupt: bool = False,
    drop_no_label_zone: bool = False,
    on_file_done: Callable[[FileResult], None] | None = None,
) -> ConvertSummary:
    """Convert Waymo v1 files/folders and v2 folders into the training cache at `out`, one process per
    source (a v1 file, a v2 segment) at a time.

    Finished shards are skipped (resume); a source that fails (DataError) is reported in the summary and
    leaves no shard; the index is rebuilt at the end from every finished shard.
    """
    from drivetl.data.cache import write_index
    from drivetl.data.formats.waymo._decode import default_threads

    t0 = time.perf_counter()
    files = find_sources(sources)
    root = Path(out)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)  # a killed run's half-written shards
    summary = ConvertSummary(out=str(root))
    workers = max(1, min(int(workers), len(files) or 1))
    threads = max(1, default_threads() // workers)
    kwargs = {"skip_corrupt": skip_corrupt, "threads": threads, "drop_no_label_zone": drop_no_label_zone}

    def done(res: FileResult) -> None:
        summary.files.append(res)
        if on_file_done is not None:
            on_file_done(res)

    from drivetl.data.cache import shard_is_finished

    todo = []
    for f in files:  # finished shards are reported here, without starting a process for them
        meta = shard_is_finished(root, f.shard)
        if meta is not None and meta.get("source", {}).get("size") == f.size():
            done(FileResult(source=str(f), shard=f.shard, frames=len(meta["frames"]), resumed=True))
        else:
            todo.append(f)
    workers = max(1, min(workers, len(todo) or 1))
    kwargs["threads"] = max(1, default_threads() // workers)
    if workers == 1:
        for f in todo:
            done(convert_file(str(f.path), str(root), segment=f.segment, **kwargs))
    else:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=die_with_parent,  # a killed run's workers must not go on writing shards
            initargs=(os.getpid(),),
        ) as pool:
            pending: set[Future] = {
                pool.submit(convert_file, str(f.path), str(root), segment=f.segment, **kwargs) for f in todo
            }
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done(fut.result())
    write_index(root)
    summary.seconds = time.perf_counter() - t0
    return summary
