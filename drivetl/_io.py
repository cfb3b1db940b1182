"""File helpers shared by every package (a leaf module: imports nothing of drivetl but errors).

Nothing drivetl writes is ever left half-written where a complete file is expected: every writer
goes through `atomic_write`, which writes a temporary file in the target's folder and renames it
over the target only once the content is complete and flushed.

Every YAML file a user hands over (rig files, team-folder metadata) is read through `read_yaml`:
`yaml.safe_load` with its size bounded before and after alias expansion.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from drivetl.errors import DrivetlError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it to `path`, on error delete it.

    Usage: ``with atomic_write(out, "w") as f: f.write(text)``. The rename is atomic on POSIX, so a
    reader (or a resumed run) sees either the old file, no file, or the complete new file.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_partials(root: str | os.PathLike, recursive: bool = True) -> int:
    """Delete the temporary files (``.NAME.*.partial``) a killed writer left under `root` (only
    directly in it when not `recursive`).

    Called when a resumable writer (convert, simulate, import, the team writer, a resumed training
    run) starts on an existing folder: one writer per folder, so any partial file there is a dead
    run's. Returns the number removed.
    """
    removed = 0
    folder = Path(root)
    if not folder.is_dir():
        return 0
    for path in folder.rglob(".*.partial") if recursive else folder.glob(".*.partial"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def die_with_parent(parent_pid: int) -> None:
    """In a worker process of a resumable writer: be killed when the process that started it dies.

    A run killed outright (SIGKILL, the out-of-memory killer) runs no clean-up; its pool workers would
    go on with their queued jobs, writing into the output folder while a rerun writes there too. On
    Linux the kernel sends this process SIGKILL when its parent exits (``PR_SET_PDEATHSIG``); when the
    parent `parent_pid` is already gone, the worker exits now. Elsewhere nothing is done.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def single_threaded_blas() -> None:
    """In a worker process that shares the cores with others: numpy's BLAS on one thread.

    Torch runs its own thread pool on one thread in each DataLoader worker, numpy's BLAS (OpenBLAS,
    MKL) keeps one thread per core. A worker's point transforms (``(N, 3) @ (3, 3)`` products of
    tens of thousands of points) then run on every core, and BLAS's waiting threads spin on the
    core the training process computes on: with the demo's one loader worker a pretraining step
    took a median 0.394 s against 0.309 s with the worker's BLAS on one thread
    (`tools/bench_threads.py --compare-blas`). Used by the data pipeline's loader workers and the
    simulator's pool workers.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


MAX_YAML_BYTES = 8 << 20
MAX_YAML_VALUES = 200_000


def read_yaml(text: str, where: str, error: type[DrivetlError], max_values: int = MAX_YAML_VALUES) -> Any:
    """`yaml.safe_load(text)`, refusing what would blow up memory; `error` names `where` and the fix.

    A file over `MAX_YAML_BYTES` is refused before parsing. After parsing, the values are counted
    as a reader would see them with every alias expanded (shared subtrees counted once per use,
    memoized, so the count itself is cheap): a few hundred bytes of nested anchors can stand for
    billions of values. Recursive aliases are refused too.
    """
    if len(text) > MAX_YAML_BYTES:
        raise error(f"{where}: {len(text):,} characters; a YAML file here is at most {MAX_YAML_BYTES:,}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise error(f"{where}: not valid YAML{at}: {str(problem)[:200]}") from None
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def count(node: Any) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise error(f"{where}: a YAML alias refers to itself (a recursive structure); remove it")
        open_ids.add(key)
        total = 1
        for child in node.values() if isinstance(node, dict) else node:
            total += count(child)
            if total > max_values:
                raise error(
                    f"{where}: expands to more than {max_values:,} values (YAML anchors and aliases "
                    "repeated inside each other); write the values out or remove the aliases"
                )
        open_ids.discard(key)
        sizes[key] = total
        return total

    count(data)
    return data


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Raise OutputError unless `path` (a folder or a file, existing or not) can be written.

    Checked before a command starts its work, so a long run never ends at a folder it cannot write:
    the nearest existing ancestor must be a writable folder (a file in the way of a folder is named).
    """
    from drivetl.errors import OutputError

    p = Path(path)
    probe = p if p.is_dir() else p.parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{probe}: a file is in the way of the {what} {p}; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{probe}: not writable, so the {what} {p} cannot be written; fix its permissions")
