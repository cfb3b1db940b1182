"""Waymo v1 TFRecords -> the training cache, one shard per source file, in parallel processes, resumable."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from drivetl._io import remove_stale_partials
from drivetl.errors import DataError

SUFFIXES = (".tfrecord", ".tfrecords")


def find_sources(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """TFRecord files named directly, or found (recursively) in the folders named; sorted, no repeats."""
    found: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files = sorted(
                f for f in p.rglob("*") if f.is_file() and (f.suffix in SUFFIXES or ".tfrecord" in f.name)
            )
            if not files:
                raise DataError(f"{p}: no .tfrecord files in this folder")
            found.extend(files)
        elif p.is_file():
            found.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    out = []
    for f in found:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            out.append(f)
    return out


def shard_name(path: Path) -> str:
    """A shard name that is readable (the file's stem) and unique (a hash of its absolute path)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    stem = path.name.split(".tfrecord")[0]
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
    path: str, root: str, *, skip_corrupt: bool = False, threads: int = 1, drop_no_label_zone: bool = False
) -> FileResult:
    """Convert one Waymo TFRecord into one shard of the cache at `root` (skipped if already finished)."""
    from drivetl.data.cache import ShardWriter, shard_is_finished
    from drivetl.data.formats.waymo._reader import WaymoV1Reader

    src = Path(path)
    name = shard_name(src)
    size = src.stat().st_size
    result = FileResult(source=str(src), shard=name)
    meta = shard_is_finished(root, name)
    if meta is not None and meta.get("source", {}).get("size") == size:
        result.frames = len(meta["frames"])
        result.resumed = True
        return result
    t0 = time.perf_counter()
    reader = WaymoV1Reader(src, skip_corrupt=skip_corrupt, threads=threads)
    writer = ShardWriter(root, name, {"path": str(src.resolve()), "size": size, "reader": "waymo_v1"})
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
    """Convert Waymo v1 files/folders into the training cache at `out`, one process per file at a time.

    Finished shards are skipped (resume); a file that fails (DataError) is reported in the summary and
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
        meta = shard_is_finished(root, shard_name(f))
        if meta is not None and meta.get("source", {}).get("size") == f.stat().st_size:
            done(FileResult(source=str(f), shard=shard_name(f), frames=len(meta["frames"]), resumed=True))
        else:
            todo.append(f)
    workers = max(1, min(workers, len(todo) or 1))
    kwargs["threads"] = max(1, default_threads() // workers)
    if workers == 1:
        for f in todo:
            done(convert_file(str(f), str(root), **kwargs))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            pending: set[Future] = {pool.submit(convert_file, str(f), str(root), **kwargs) for f in todo}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done(fut.result())
    write_index(root)
    summary.seconds = time.perf_counter() - t0
    return summary
