"""Decode all range images of one frame in parallel threads (libdeflate, zlib and numpy release the GIL).

The same decoding serves both releases: v1 range images are zlib-compressed matrices inflated in the
worker threads (`_zlib`), v2 range images are float32 lists read from Parquet; either way each
(laser, return) image becomes points through `range_image_points`, the TOP laser's through its
per-pixel pose.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from threading import Lock
from typing import Any

import numpy as np

from drivetl.data.formats.waymo import _zlib
from drivetl.data.formats.waymo._calib import LaserCalib
from drivetl.data.formats.waymo._matrix import MatrixFormatError, parse_matrix
from drivetl.data.formats.waymo._range_image import posed_rays, range_image_points
from drivetl.errors import DataError

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = -1
_POOL_LOCK = Lock()


def default_threads() -> int:
    """Threads used to decode one frame: the usable cores, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool (recreated after a fork, where the parent's threads do not exist)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid() or _POOL._max_workers < threads:
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="drivetl-waymo")
            _POOL_PID = os.getpid()
        return _POOL


@dataclass(eq=False)
class DecodedLaser:
    """One laser return decoded: xyz (N, 3) float32 vehicle frame, pixel (N,) row-major indices of the
    returns in the (H, W) range image `shape`; `values` (N, 4) float32 range, intensity, elongation,
    is_in_nlz (Waymo's channels, raw) is gathered on first use from the inflated image `flat`."""

    xyz: np.ndarray
    pixel: np.ndarray
    flat: np.ndarray
    shape: tuple[int, int]
    _values: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = np.take(self.flat, self.pixel, axis=0)
        return self._values


def _inflate(blob: bytes, what: str) -> np.ndarray:
    try:
        return parse_matrix(_zlib.inflate(blob), "<f4")
    except (zlib.error, MatrixFormatError) as exc:
        raise DataError(
            f"{what}: cannot decode the compressed matrix ({exc}); the record is damaged"
        ) from None


#: Where a range image or a pixel pose comes from: a zero-argument callable returning the
#: (H, W, C) float32 array (inflating a v1 blob, or viewing v2 Parquet values), run in a thread.
ArraySource = Callable[[], np.ndarray]


@dataclass(frozen=True, eq=False)
class LaserJob:
    """One (laser, return) range image to decode: `source` yields its (H, W, 4) float32 array;
    `size` orders the jobs (biggest first balances the threads); `where` starts every error."""

    laser: str
    return_index: int
    source: ArraySource
    calib: LaserCalib
    size: int
    where: str


def _posed(source: ArraySource, calib: LaserCalib, world_from_vehicle: np.ndarray, where: str):
    pose = source()
    if pose.ndim != 3 or pose.shape[2] != 6:
        raise DataError(f"{where}: pixel pose has shape {pose.shape}, expected (H, W, 6)")
    inclinations = calib.inclinations(pose.shape[0], where)
    return posed_rays(pose, world_from_vehicle, inclinations, calib.vehicle_from_lidar)


def _decode_one(job: LaserJob, pose: Future | None) -> DecodedLaser:
    where = job.where
    ri = job.source()
    if ri.ndim != 3 or ri.shape[2] < 4:
        raise DataError(f"{where}: range image has shape {ri.shape}, expected (H, W, 4)")
    height, width = int(ri.shape[0]), int(ri.shape[1])
    inclinations = job.calib.inclinations(height, where)
    posed = None
    if pose is not None:
        posed = pose.result()
        if posed[0].shape[1] != height * width:
            raise DataError(
                f"{where}: the TOP pixel pose does not have the range image's shape ({height}, {width})"
            )
    xyz, pixel = range_image_points(ri[..., 0], inclinations, job.calib.vehicle_from_lidar, posed)
    return DecodedLaser(xyz, pixel, ri.reshape(height * width, -1)[:, :4], (height, width))


def decode_jobs(
    jobs: list[LaserJob],
    top_pose: ArraySource | None,
    world_from_vehicle: np.ndarray,
    where: str,
    threads: int,
) -> dict[tuple[str, int], DecodedLaser]:
    """Decode (laser, return) range images, in parallel threads when `threads` > 1.

    top_pose: the source of the TOP laser's (H, W, 6) pixel pose, or None; it applies to the TOP
    jobs. Returns {(laser name, return index 1|2): DecodedLaser}. threads <= 1 decodes inline.
    """
    jobs = sorted(jobs, key=lambda j: -j.size)  # biggest first balances the threads
    top_calib = next((j.calib for j in jobs if j.laser == "TOP"), None)
    if top_calib is None:
        top_pose = None
    pose_where = f"{where}: TOP pixel pose"
    if threads <= 1 or len(jobs) <= 1:
        pose_future: Future | None = None
        if top_pose is not None:
            pose_future = Future()
            pose_future.set_result(_posed(top_pose, top_calib, world_from_vehicle, pose_where))
        return {
            (j.laser, j.return_index): _decode_one(j, pose_future if j.laser == "TOP" else None)
            for j in jobs
        }
    pool = _pool(threads)
    # The pose job is queued first, so a TOP job waiting on it never blocks a worker it needs.
    pose_future = (
        pool.submit(_posed, top_pose, top_calib, world_from_vehicle, pose_where)
        if top_pose is not None
        else None
    )
    futures = {
        (j.laser, j.return_index): pool.submit(_decode_one, j, pose_future if j.laser == "TOP" else None)
        for j in jobs
    }
    return {key: fut.result() for key, fut in futures.items()}


def decode_lasers(
    frame: Any,
    calibs: dict[str, LaserCalib],
    world_from_vehicle: np.ndarray,
    where: str,
    threads: int,
) -> dict[tuple[str, int], DecodedLaser]:
    """Decode every (laser, return) range image of a v1 Frame proto (see `decode_jobs`).

    `calibs` must hold every laser that has a range image (the caller checks).
    """
    from drivetl.data.formats.waymo._names import laser_name

    jobs: list[LaserJob] = []
    pose_blob = b""
    for laser in frame.lasers:
        if not (laser.ri_return1.range_image_compressed or laser.ri_return2.range_image_compressed):
            continue
        name = laser_name(int(laser.name), where)
        for ret, ri in ((1, laser.ri_return1), (2, laser.ri_return2)):
            blob = ri.range_image_compressed
            if blob:
                w = f"{where}: laser {name} return {ret}"
                source = functools.partial(_inflate, blob, w)
                jobs.append(LaserJob(name, ret, source, calibs[name], len(blob), w))
        if name == "TOP" and laser.ri_return1.range_image_pose_compressed:
            pose_blob = laser.ri_return1.range_image_pose_compressed
    top_pose = functools.partial(_inflate, pose_blob, f"{where}: TOP pixel pose") if pose_blob else None
    return decode_jobs(jobs, top_pose, world_from_vehicle, where, threads)
