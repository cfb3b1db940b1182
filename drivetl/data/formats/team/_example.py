"""A tiny, seeded example world for the team format: a flat ground and a few box-shaped cars.

`example_record(rig, key, seed)` casts every beam of each of the rig's LiDARs (its range-image
rays) against a ground plane and a few boxes, and returns a `FrameRecord` with points in the sensor
frame, raw intensity encoded as the rig declares, a plain image per camera of the rig's size, and
the boxes. It exists so that docs, tests and smoke runs have real team-format files without the
full simulator; it is not a sensor simulation.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints


def _ray_box(origin: np.ndarray, dirs: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(R,) distance along unit rays `dirs` (R, 3) from `origin` (3,) to an oriented box, inf if missed."""
    x, y, z, length, w, h, hd = box
    c, s = np.cos(hd), np.sin(hd)
    rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])  # local_from_vehicle
    o = rot @ (origin - (x, y, z))
    d = dirs @ rot.T
    half = np.array([length, w, h]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tmax >= tmin) & (tmax > 0)
    return np.where(hit, np.where(tmin > 0, tmin, np.inf), np.inf)


def example_boxes(seed: int, ground_z: float = 0.0, count: int = 4) -> Boxes:
    """`count` seeded boxes standing on the ground z = ground_z, 6-30 m around the vehicle."""
    rng = np.random.default_rng(seed)
    rows, classes = [], []
    kinds = [("vehicle", (4.5, 1.9, 1.6)), ("pedestrian", (0.8, 0.7, 1.75)), ("cyclist", (1.8, 0.7, 1.7))]
    for i in range(count):
        cls, size = kinds[0] if i % 2 == 0 else kinds[1 + (i // 2) % 2]
        size = np.asarray(size) * rng.uniform(0.9, 1.1, 3)
        r, a = rng.uniform(6, 30), rng.uniform(-np.pi, np.pi)
        rows.append([r * np.cos(a), r * np.sin(a), ground_z + size[2] / 2, *size, rng.uniform(-np.pi, np.pi)])
        classes.append(cls)
    return Boxes(np.asarray(rows), tuple(classes), tuple(f"obj{i}" for i in range(count)))


def example_record(rig, key: FrameKey, seed: int = 0, ground_z: float | None = None) -> FrameRecord:
    """A FrameRecord of `rig` looking at a flat ground (z = ground_z, default the rig's ground) and boxes."""
    from PIL import Image

    g = float(rig.ground) if ground_z is None and not isinstance(rig.ground, str) else float(ground_z or 0.0)
    rng = np.random.default_rng(seed)
    boxes = example_boxes(seed, g)
    lidars = {}
    for lidar in rig.lidars:
        m = lidar.vehicle_from_lidar
        rays_s = lidar.beam_directions().reshape(-1, 3)
        dirs = rays_s @ m[:3, :3].T
        origin = m[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_ground = np.where(dirs[:, 2] < -1e-6, (g - origin[2]) / dirs[:, 2], np.inf)
        t_box = np.stack([_ray_box(origin, dirs, b) for b in boxes.boxes], axis=1).min(axis=1)
        t = np.minimum(t_ground, t_box)
        ok = (t > max(lidar.min_range, 0.1)) & (t < lidar.max_range)
        t = t[ok] + rng.normal(0, 0.01, ok.sum())
        pts_s = rays_s[ok] * t[:, None]
        canon = np.where(
            t_box[ok] < t_ground[ok], rng.uniform(0.5, 0.9, ok.sum()), rng.uniform(0.05, 0.3, ok.sum())
        )
        raw = lidar.intensity.from_canonical(canon).astype(np.float32)
        lidars[lidar.name] = LidarPoints(lidar.name, np.c_[pts_s, raw].astype(np.float32), frame="sensor")
    cameras = {}
    for cam in rig.cameras:
        buf = io.BytesIO()
        Image.new("RGB", (cam.width, cam.height), (90, 110, 130)).save(buf, format="JPEG", quality=80)
        cameras[cam.name] = CameraImage(cam.name, buf.getvalue(), "jpeg")
    return FrameRecord(key, rig, lidars, cameras, boxes)


def write_example_team(
    root: str | os.PathLike,
    rig,
    frames: int = 2,
    seed: int = 0,
    segment: str = "example",
    ground_z: float | None = None,
    lidar_format: str = ".pcd",
) -> Path:
    """Write `frames` example frames of `rig` into a team folder (train split, last frame in val)."""
    from drivetl.data.formats.team import TeamWriter

    with TeamWriter(root, rig, lidar_format=lidar_format) as writer:
        for i in range(frames):
            key = FrameKey(segment, 1_000_000 + 100_000 * i)
            split = "val" if frames > 1 and i == frames - 1 else "train"
            writer.write(example_record(rig, key, seed + i, ground_z), split)
    return Path(root)
