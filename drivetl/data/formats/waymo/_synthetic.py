"""Seeded Waymo-like frames (rig, record, range images) for tests and benchmarks.

`synthetic_frame(seed, ...)` builds a five-laser, Waymo-shaped rig (TOP with explicit non-uniform
beam inclinations and a per-column pixel pose of a moving, turning vehicle; four side lasers with
min/max-only inclinations), small JPEG camera images, boxes, a far-from-origin frame pose, and
range images whose values are quantized like real ones (so they compress like real ones).
"""

from __future__ import annotations

import io
import math

import numpy as np

from drivetl.data.formats.waymo._range_image import rotation_from_rpy_array
from drivetl.data.formats.waymo._writer import RangeImageData
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord

# Mounting of Waymo's lasers (translation m, yaw deg) roughly as the real vehicles have them.
_MOUNTS = {
    "TOP": ((1.43, 0.0, 2.184), 148.0, (-17.6, 2.4)),
    "FRONT": ((4.07, 0.0, 0.689), 0.3, (-90.0, 30.0)),
    "SIDE_LEFT": ((3.245, 1.025, 0.979), 88.8, (-90.0, 30.0)),
    "SIDE_RIGHT": ((3.245, -1.025, 0.979), -92.2, (-90.0, 30.0)),
    "REAR": ((-1.155, 0.0, 0.464), -178.4, (-90.0, 30.0)),
}
_CAMERAS = ("FRONT", "SIDE_LEFT")


def _transform(rpy: tuple[float, float, float], t: tuple[float, float, float]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation_from_rpy_array(np.asarray(rpy, dtype=np.float64))
    m[:3, 3] = t
    return m


def synthetic_rig(
    top_shape: tuple[int, int] = (64, 2650), side_shape: tuple[int, int] = (200, 600), seed: int = 0
):  # -> SensorRig
    """A Waymo-like `SensorRig` (five lasers, two small cameras)."""
    from drivetl.calib import CameraModel, IntensityEncoding, LidarModel, SensorRig

    rng = np.random.default_rng(seed)
    lidars = []
    for name, (t, yaw_deg, (lo, hi)) in _MOUNTS.items():
        h, w = top_shape if name == "TOP" else side_shape
        lo_r, hi_r = math.radians(lo), math.radians(hi)
        if name == "TOP":  # explicit, non-uniform beams (denser near the horizon)
            u = np.sort(rng.uniform(0, 1, h))
            u = 0.5 * (u + np.linspace(0.0, 1.0, h))
            inc = lo_r + (hi_r - lo_r) * np.sqrt(u)
            inc = np.maximum.accumulate(inc + np.arange(h) * 1e-6)
        else:
            inc = LidarModel.uniform_inclinations(h, lo_r, hi_r)
        tilt = rng.normal(0, 0.01, 2)
        lidars.append(
            LidarModel(
                name=name,
                model=f"synthetic {name}",
                vehicle_from_lidar=_transform((tilt[0], tilt[1], math.radians(yaw_deg)), t),
                inclinations=inc,
                columns=w,
                max_range=75.0 if name == "TOP" else 20.0,
                intensity=IntensityEncoding(kind="float", max_value=1.0, transform="tanh"),
                returns=2,
            )
        )
    cameras = tuple(
        CameraModel(
            name=name,
            width=64,
            height=48,
            fx=60.0,
            fy=60.0,
            cx=32.0,
            cy=24.0,
            k1=-0.05,
            k2=0.01,
            vehicle_from_camera=_transform((0.0, 0.02, yaw), (1.5, 0.0, 2.1)),
            rolling_shutter_direction="LEFT_TO_RIGHT",
            readout_time_s=0.02,
        )
        for name, yaw in zip(_CAMERAS, (0.0, math.pi / 2), strict=True)
    )
    return SensorRig(name="synthetic_waymo", lidars=tuple(lidars), cameras=cameras)


def _jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    from PIL import Image

    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _range_image(rng: np.random.Generator, h: int, w: int, max_range: float, returns: int) -> np.ndarray:
    """(returns, h, w, 4): smooth quantized ranges, ~15% no-return pixels (0 or -1), raw features."""
    rows = np.linspace(0.2, 1.0, h)[:, None]
    cols = np.linspace(0, 6 * np.pi, w)[None, :]
    out = np.empty((returns, h, w, 4), np.float32)
    for k in range(returns):
        base = max_range * rows * (0.55 + 0.35 * np.sin(cols + k)) + rng.normal(0, 0.05, (h, w))
        rng_img = np.round(np.clip(base, 0.5, max_range) * 200) / 200
        dead = rng.random((h, w))
        rng_img[dead < 0.10 + 0.15 * k] = -1.0
        rng_img[(dead >= 0.10 + 0.15 * k) & (dead < 0.15 + 0.15 * k)] = 0.0
        out[k, ..., 0] = rng_img
        out[k, ..., 1] = np.round(rng.gamma(1.0, 0.2, (h, w)) * 1000) / 1000
        out[k, ..., 2] = np.round(rng.random((h, w)) * 0.5 * 64) / 64
        out[k, ..., 3] = np.where(rng.random((h, w)) < 0.02, 1.0, -1.0)
    return out


def pixel_pose_for(
    world_from_vehicle: np.ndarray,
    width: int,
    height: int,
    *,
    speed: float = 15.0,
    yaw_rate: float = 0.3,
    sweep_s: float = 0.1,
    per_pixel_jitter: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """(height, width, 6) float32 roll, pitch, yaw, x, y, z of a vehicle driving at `speed` m/s and
    turning at `yaw_rate` rad/s during one sweep centred on the frame time."""
    yaw0 = math.atan2(world_from_vehicle[1, 0], world_from_vehicle[0, 0])
    pitch0 = -math.asin(float(np.clip(world_from_vehicle[2, 0], -1, 1)))
    roll0 = math.atan2(world_from_vehicle[2, 1], world_from_vehicle[2, 2])
    dt = (np.arange(width) / max(width - 1, 1) - 0.5) * sweep_s  # column time relative to the frame
    yaw = yaw0 + yaw_rate * dt
    fwd = world_from_vehicle[:3, 0]
    pos = world_from_vehicle[:3, 3][None, :] + speed * dt[:, None] * fwd[None, :]
    pose = np.zeros((height, width, 6), np.float64)
    pose[..., 0] = roll0
    pose[..., 1] = pitch0
    pose[..., 2] = yaw[None, :]
    pose[..., 3:] = pos[None, :, :]
    if per_pixel_jitter:
        rng = np.random.default_rng(seed)
        pose[..., 3:] += rng.normal(0, 0.01, (height, width, 3))
        pose[..., 2] += rng.normal(0, 1e-4, (height, width))
    return pose.astype(np.float32)


def synthetic_frame(
    seed: int = 0,
    *,
    top_shape: tuple[int, int] = (64, 2650),
    side_shape: tuple[int, int] = (200, 600),
    returns: int = 2,
    per_pixel_jitter: bool = False,
    timestamp_us: int = 1_553_735_853_462_203,
    segment: str = "synthetic_segment",
    rig=None,
) -> tuple[FrameRecord, dict[str, RangeImageData]]:
    """One Waymo-like frame: (record without points, {laser: RangeImageData}); pass both to `WaymoWriter`."""
    rng = np.random.default_rng(seed)
    rig = rig or synthetic_rig(top_shape, side_shape, seed=0)
    world_from_vehicle = _transform((0.01, -0.02, 0.77), (-25211.26, 42391.08, -160.6))
    range_images = {}
    for lidar in rig.lidars:
        ri = _range_image(rng, lidar.rows, lidar.columns, lidar.max_range, returns)
        pose = None
        if lidar.name == "TOP":
            pose = pixel_pose_for(
                world_from_vehicle, lidar.columns, lidar.rows, per_pixel_jitter=per_pixel_jitter, seed=seed
            )
        range_images[lidar.name] = RangeImageData(lidar.name, ri, pose)
    cameras = {cam.name: CameraImage(cam.name, _jpeg(rng, cam.width, cam.height)) for cam in rig.cameras}
    n = 6
    boxes = Boxes(
        np.column_stack(
            [
                rng.uniform(-30, 30, n),
                rng.uniform(-30, 30, n),
                rng.uniform(0.5, 1.5, n),
                rng.uniform(0.5, 5, n),
                rng.uniform(0.5, 2.5, n),
                rng.uniform(1, 2, n),
                rng.uniform(-np.pi + 1e-3, np.pi, n),
            ]
        ),
        ("vehicle", "pedestrian", "cyclist", "sign", "vehicle", "pedestrian"),
        tuple(f"obj{i}" for i in range(n)),
        np.arange(n, dtype=np.int32) * 10,
        np.array([1, 2, 1, 0, 2, 1]),
        rng.normal(0, 3, (n, 2)),
    )
    record = FrameRecord(
        key=FrameKey(segment, timestamp_us),
        rig=rig,
        cameras=cameras,
        boxes=boxes,
        world_from_vehicle=world_from_vehicle,
    )
    return record, range_images
