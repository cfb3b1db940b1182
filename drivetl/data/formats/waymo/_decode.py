"""Decode all range images of one frame in parallel threads (zlib and numpy release the GIL)."""

from __future__ import annotations

import os
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from threading import Lock
from typing import Any

import numpy as np

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
        return parse_matrix(zlib.decompress(blob), "<f4")
    except (zlib.error, MatrixFormatError) as exc:
        raise DataError(
            f"{what}: cannot decode the compressed matrix ({exc}); the record is damaged"
        ) from None


def _posed(blob: bytes, calib: LaserCalib, world_from_vehicle: np.ndarray, where: str):
    pose = _inflate(blob, where)
    if pose.ndim != 3 or pose.shape[2] != 6:
        raise DataError(f"{where}: pixel pose has shape {pose.shape}, expected (H, W, 6)")
    inclinations = calib.inclinations(pose.shape[0], where)
    return posed_rays(pose, world_from_vehicle, inclinations, calib.vehicle_from_lidar)


def _decode_one(
    blob: bytes,
    calib: LaserCalib,
    pose: Future | None,
    world_from_vehicle: np.ndarray,
    where: str,
) -> DecodedLaser:
    ri = _inflate(blob, where)
    if ri.ndim != 3 or ri.shape[2] < 4:
        raise DataError(f"{where}: range image has shape {ri.shape}, expected (H, W, 4)")
    height, width = int(ri.shape[0]), int(ri.shape[1])
    inclinations = calib.inclinations(height, where)
    posed = None
    if pose is not None:
        posed = pose.result()
        if posed[0].shape[0] != height * width:
            raise DataError(
                f"{where}: the TOP pixel pose does not have the range image's shape ({height}, {width})"
            )
    xyz, pixel = range_image_points(ri[..., 0], inclinations, calib.vehicle_from_lidar, posed)
    return DecodedLaser(xyz, pixel, ri.reshape(height * width, -1)[:, :4], (height, width))


def decode_lasers(
    frame: Any,
    calibs: dict[str, LaserCalib],
    world_from_vehicle: np.ndarray,
    where: str,
    threads: int,
) -> dict[tuple[str, int], DecodedLaser]:
    """Decode every (laser, return) range image of a Frame proto.

    Returns {(laser name, return index 1|2): DecodedLaser}. `calibs` must hold every laser that has
    a range image (the caller checks). threads <= 1 decodes inline.
    """
    from drivetl.data.formats.waymo._names import laser_name

    jobs: list[tuple[tuple[str, int], bytes, LaserCalib, bool, str]] = []
    pose_blob = b""
    for laser in frame.lasers:
        if not (laser.ri_return1.range_image_compressed or laser.ri_return2.range_image_compressed):
            continue
        name = laser_name(int(laser.name), where)
        for ret, ri in ((1, laser.ri_return1), (2, laser.ri_return2)):
            if ri.range_image_compressed:
                jobs.append(
                    (
                        (name, ret),
                        ri.range_image_compressed,
                        calibs[name],
                        name == "TOP",
                        f"{where}: laser {name} return {ret}",
                    )
                )
        if name == "TOP" and laser.ri_return1.range_image_pose_compressed:
            pose_blob = laser.ri_return1.range_image_pose_compressed
    jobs.sort(key=lambda j: -len(j[1]))  # biggest first balances the threads
    if threads <= 1 or len(jobs) <= 1:
        pose_future: Future | None = None
        if pose_blob:
            pose_future = Future()
            pose_future.set_result(
                _posed(pose_blob, calibs["TOP"], world_from_vehicle, f"{where}: TOP pixel pose")
            )
        return {
            key: _decode_one(blob, cal, pose_future if is_top else None, world_from_vehicle, w)
            for key, blob, cal, is_top, w in jobs
        }
    pool = _pool(threads)
    # The pose job is queued first, so a TOP job waiting on it never blocks a worker it needs.
    pose_future = (
        pool.submit(_posed, pose_blob, calibs["TOP"], world_from_vehicle, f"{where}: TOP pixel pose")
        if pose_blob
        else None
    )
    futures = {
        key: pool.submit(_decode_one, blob, cal, pose_future if is_top else None, world_from_vehicle, w)
        for key, blob, cal, is_top, w in jobs
    }
    return {key: fut.result() for key, fut in futures.items()}
