"""The frames `drivetl evaluate` and `drivetl predict` read: start-up checks, then batches in which
a bad frame is either named (the run stops) or skipped and counted (``--skip-corrupt``).

Start-up (`check_frames`), before any model sees a frame: the source is already open
(`open_eval_data`: the TFRecord headers walked with their length CRCs and the first record parsed
as a Frame, a team folder's rig.yaml and frame list, a Waymo v2 folder's footers, a cache's index);
the first frame is decoded through the sample pipeline with each model's batch spec (its point
files, its images when a model takes cameras, canonicalized with the rig), and when ``labels`` is
set, every evaluated frame's labels and pose of a team folder are read (`TeamReader.check_labels`,
no points or images). The first frame must read even with ``--skip-corrupt``: it shows the source
is what it claims to be, and Waymo files take their rig from it.

During the run (`frame_batches`), a frame whose reading raises a `DrivetlError` stops the run with
one `DataError` naming the frame (its key or record) and the reader's own message (which names the
file), or with ``skip_corrupt`` becomes a `SkippedFrame` the caller counts and reports. The same
holds in DataLoader worker processes: a worker's error reaches the caller as the worker's own
message (`drivetl.errors.one_line` strips the worker's traceback), and a worker that dies (killed by
the kernel, a crash in a decoder) or sends no batch for `WORKER_TIMEOUT_S` is one `DataError`
instead of a torch RuntimeError or a wait without end. The loader's workers are shut down as soon
as iteration stops, error or not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader, Dataset

from drivetl.data.dataset import BatchSpec, Collate, FrameDataset, FrameSet, worker_init
from drivetl.data.records import Sample
from drivetl.errors import DataError, DrivetlError, one_line

__all__ = ["SKIP_HINT", "SkippedFrame", "check_frames", "frame_batches", "frame_label", "skipped_summary"]

#: Seconds a worker process may take for one batch before the run stops instead of waiting on: a
#: last guard (a batch of full-size Waymo frames takes seconds); a worker that cannot send its batch
#: must not leave the command waiting forever.
WORKER_TIMEOUT_S = 600.0
#: Skipped frames listed by name in report.md / report.html (metrics.json and predict.json list all).
LISTED_SKIPS = 20
SKIP_HINT = "fix or remove the frame, or pass --skip-corrupt to skip and count unreadable frames"


@dataclass(frozen=True)
class SkippedFrame:
    """A frame left out under ``--skip-corrupt``: its position among the frames of the run's
    `EvalData`, its name (key, or file and record) and why (the reader's one-line message)."""

    position: int
    frame: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form (metrics.json, predict.json)."""
        return {"position": self.position, "frame": self.frame, "reason": self.reason}


def frame_label(data: Any, position: int) -> str:
    """How messages name the frame at `position` of `data` (an `EvalData`): its key where the source
    lists keys (team folder, cache, Waymo v2), else its file and record (Waymo v1)."""
    index = data.indices[position]
    source = data.source
    keys = getattr(source, "keys", None)
    if keys is None and hasattr(source, "reader"):  # Waymo v2: the reader lists the keys
        keys = getattr(source.reader, "keys", None)
    if isinstance(keys, list | tuple) and 0 <= index < len(keys):
        return str(keys[index])
    entries = getattr(source, "entries", None)  # Waymo v1: (file, byte offset, record index)
    if isinstance(entries, list) and 0 <= index < len(entries):
        path, offset, k = entries[index]
        return f"{path}: record {k} at byte offset {offset}"
    return f"frame {index}"


def check_frames(data: Any, specs: Sequence[BatchSpec], labels: bool = False) -> None:
    """Start-up checks of `data` (an `EvalData`) for models taking `specs` (see the module docstring);
    a `DataError` naming the file and frame when they fail."""
    where = frame_label(data, 0)
    todo = list(dict.fromkeys(specs)) or [BatchSpec()]
    for spec in todo:
        try:
            FrameDataset([FrameSet(data.source, data.indices[:1])], spec)[0]
        except DrivetlError as exc:
            raise DataError(
                f"{one_line(exc)} (the first frame, {where}, read at start-up: the data cannot be "
                "evaluated as it is; check that --data and --format name the right data)"
            ) from None
    check = getattr(data.source, "check_labels", None)
    if labels and callable(check):
        subset = data.source
        if len(data.indices) != len(data.source):
            from drivetl.data.formats.team import TeamReader

            if isinstance(subset, TeamReader):
                keys = [subset.keys[i] for i in data.indices]
                subset = TeamReader(subset.root, keys, rig=subset.rig, fmt=subset.format)
        try:
            subset.check_labels()
        except DrivetlError as exc:
            raise DataError(f"{one_line(exc)} (labels are read at start-up; {SKIP_HINT})") from None


class _Frames(Dataset):
    """``[i] -> Sample | SkippedFrame`` over the frames at `positions` of an `EvalData`."""

    def __init__(self, data: Any, positions: Sequence[int], spec: BatchSpec, skip_corrupt: bool):
        self.data = data
        self.positions = list(positions)
        self.frames = FrameDataset([FrameSet(data.source, [data.indices[p] for p in self.positions])], spec)
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Sample | SkippedFrame:
        try:
            return self.frames[i]
        except DrivetlError as exc:
            pos = self.positions[i]
            label, reason = frame_label(self.data, pos), one_line(exc)
            if self.skip_corrupt:
                return SkippedFrame(pos, label, reason)
            raise DataError(f"{reason} (frame {label}); {SKIP_HINT}") from None


class _Collate:
    """``items -> (samples, Batch or None, skipped frames)``; picklable (worker processes)."""

    def __init__(self, spec: BatchSpec):
        self.collate = Collate(spec)

    def __call__(self, items: list) -> tuple[list[Sample], Any, list[SkippedFrame]]:
        samples = [x for x in items if not isinstance(x, SkippedFrame)]
        skipped = [x for x in items if isinstance(x, SkippedFrame)]
        return samples, (self.collate(samples) if samples else None), skipped


def frame_batches(
    data: Any,
    spec: BatchSpec,
    *,
    positions: Sequence[int] | None = None,
    batch_size: int = 4,
    workers: int = 0,
    skip_corrupt: bool = False,
) -> Iterator[tuple[list[Sample], Any, list[SkippedFrame]]]:
    """``(samples, batch, skipped)`` per batch of the frames at `positions` of `data` (default:
    all), in order; `batch` is None when every frame of the batch was skipped.

    workers: DataLoader worker processes (0: read in this process)."""
    positions = list(range(len(data))) if positions is None else list(positions)
    if not positions:
        return
    loader = DataLoader(
        _Frames(data, positions, spec, skip_corrupt),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_Collate(spec),
        worker_init_fn=worker_init,
        timeout=WORKER_TIMEOUT_S if workers > 0 else 0,
    )
    it = iter(loader)
    try:
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except RuntimeError as exc:
                if type(exc) is RuntimeError and str(exc).startswith("DataLoader worker"):
                    raise DataError(
                        f"{data.root}: a data-loading worker died ({str(exc).splitlines()[0][:160]}); a "
                        "frame may need more memory than there is, or crash a decoder: rerun with "
                        "--workers 0 to find it"
                    ) from None
                if type(exc) is RuntimeError and str(exc).startswith("DataLoader timed out"):
                    raise DataError(
                        f"{data.root}: no batch from the data-loading workers in {WORKER_TIMEOUT_S:g} s; "
                        "rerun with --workers 0 to see where reading stops"
                    ) from None
                raise
            yield item
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:  # now, not when the iterator is collected: no worker outlives the run
            shutdown()
        del it


def skipped_summary(skipped: Sequence[SkippedFrame], total: int) -> list[str]:
    """Report lines for skipped frames: a count, then up to `LISTED_SKIPS` frames with their reasons."""
    if not skipped:
        return []
    lines = [f"{len(skipped)} of {total} frames skipped as unreadable (--skip-corrupt)"]
    lines += [f"{s.frame}: {s.reason}" for s in skipped[:LISTED_SKIPS]]
    if len(skipped) > LISTED_SKIPS:
        lines.append(f"... and {len(skipped) - LISTED_SKIPS} more (all listed in the JSON file)")
    return lines
