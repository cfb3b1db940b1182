"""Global augmentation of canonical samples, consistent for points, boxes and cameras.

A global augmentation is a similarity transform of the whole scene about the vehicle origin:
``new = translate @ rotate_z @ scale @ flip``. Points and box centres are mapped by it; box sizes
scale with it and headings rotate (and mirror) with it. Cameras are moved so that projecting the
new points with the new camera models still lands on the (possibly mirrored) image pixels:

- rotation and translation: ``vehicle_from_camera' = M @ vehicle_from_camera``;
- scale s: the camera's position is scaled by s (projection is invariant to scaling the scene and
  the camera centre together), its orientation kept, so the camera stays rigid;
- a mirror F of the world: ``vehicle_from_camera' = F @ vehicle_from_camera @ G`` with G the mirror of
  the camera's y axis (rigid again, det = +1); the image is flipped left-right, ``cx' = width - cx``
  and the tangential coefficient ``p2' = -p2`` (Brown–Conrady is odd in x through p2 only).

Beam dropout removes a random share of LiDAR beams. Samples carry no beam index, so beams are
recovered as bins of the elevation angle seen from the LiDAR's mounting position (`lidar_origin`).
Everything is driven by an explicit `numpy.random.Generator`, so a seed reproduces the output.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from drivetl.data.records import Boxes, Sample

__all__ = ["AugmentConfig", "augment", "transform_sample", "beam_dropout"]

_CAMERA_MIRROR = np.diag([1.0, -1.0, 1.0, 1.0])  # mirror of the camera frame's y (left) axis


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges (0 / 1.0 switches a part off).

    rotation: max |yaw| in radians (uniform). scale: (min, max) uniform factor.
    flip_x / flip_y: probability of mirroring x (front/back) / y (left/right).
    translation_std: (3,) metres, normal. beam_dropout: probability of applying beam dropout,
    beam_drop_share: share of beams removed when applied, beam_bin_deg: elevation bin width,
    lidar_origin: (3,) metres, the point elevations are measured from (canonical vehicle frame).
    """

    rotation: float = math.pi / 4
    scale: tuple[float, float] = (0.95, 1.05)
    flip_x: float = 0.0
    flip_y: float = 0.5
    translation_std: tuple[float, float, float] = (0.2, 0.2, 0.1)
    beam_dropout: float = 0.0
    beam_drop_share: float = 0.3
    beam_bin_deg: float = 0.4
    lidar_origin: tuple[float, float, float] = (0.0, 0.0, 1.9)


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Wrap to (-pi, pi]."""
    out = np.remainder(angle + np.pi, 2 * np.pi) - np.pi
    return np.where(out <= -np.pi, out + 2 * np.pi, out)


def _mirror_camera(camera, mirror: np.ndarray):
    v = mirror @ np.asarray(camera.vehicle_from_camera, dtype=np.float64) @ _CAMERA_MIRROR
    return dataclasses.replace(camera, vehicle_from_camera=v, cx=camera.width - camera.cx, p2=-camera.p2)


def transform_sample(
    sample: Sample,
    *,
    yaw: float = 0.0,
    scale: float = 1.0,
    flip_x: bool = False,
    flip_y: bool = False,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Sample:
    """Apply ``translate @ rotate_z(yaw) @ scale @ flip`` to points, boxes, cameras and images."""
    mirror = np.diag([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0, 1.0])
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    t = np.asarray(translation, dtype=np.float64)
    linear = rot @ (scale * mirror[:3, :3])

    pts = sample.points.copy()
    pts[:, :3] = (pts[:, :3].astype(np.float64) @ linear.T + t).astype(np.float32)

    bx = sample.boxes.boxes.copy()
    bx[:, :3] = bx[:, :3] @ linear.T + t
    bx[:, 3:6] *= scale
    heading = bx[:, 6]
    if flip_y:
        heading = -heading
    if flip_x:
        heading = np.pi - heading
    bx[:, 6] = _wrap(heading + yaw)
    boxes = Boxes(
        bx,
        sample.boxes.classes,
        sample.boxes.ids,
        sample.boxes.num_points,
        sample.boxes.difficulty,
        sample.boxes.speed,
    )

    mirrored = flip_x != flip_y  # two mirrors compose to a rotation by pi
    move = np.eye(4)
    move[:3, :3] = rot
    move[:3, 3] = t
    cameras, images = [], dict(sample.images)
    for cam in sample.cameras:
        if flip_x or flip_y:
            cam = (
                _mirror_camera(cam, mirror)
                if mirrored
                else dataclasses.replace(
                    cam, vehicle_from_camera=mirror @ np.asarray(cam.vehicle_from_camera)
                )
            )
        v = np.array(cam.vehicle_from_camera, dtype=np.float64)
        v[:3, 3] *= scale
        cameras.append(dataclasses.replace(cam, vehicle_from_camera=move @ v))
        if mirrored and cam.name in images:
            images[cam.name] = np.ascontiguousarray(images[cam.name][:, ::-1])
    return dataclasses.replace(sample, points=pts, boxes=boxes, cameras=tuple(cameras), images=images)


def beam_dropout(
    sample: Sample, rng: np.random.Generator, share: float, bin_deg: float, origin: tuple[float, float, float]
) -> Sample:
    """Drop the points of a random `share` of elevation bins (beams) seen from `origin`."""
    xyz = sample.points[:, :3].astype(np.float64) - np.asarray(origin)
    elev = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    bins = np.floor(elev / bin_deg).astype(np.int64)
    uniq = np.unique(bins)
    dropped = uniq[rng.random(uniq.shape[0]) < share]
    keep = ~np.isin(bins, dropped)
    return dataclasses.replace(sample, points=sample.points[keep])


def augment(sample: Sample, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> Sample:
    """A randomly augmented copy of `sample`, drawn from `rng` within `config`'s ranges."""
    yaw = float(rng.uniform(-config.rotation, config.rotation)) if config.rotation > 0 else 0.0
    scale = float(rng.uniform(*config.scale))
    flip_x = bool(rng.random() < config.flip_x)
    flip_y = bool(rng.random() < config.flip_y)
    trans = tuple(float(x) for x in rng.normal(0.0, 1.0, 3) * np.asarray(config.translation_std))
    out = transform_sample(sample, yaw=yaw, scale=scale, flip_x=flip_x, flip_y=flip_y, translation=trans)
    if config.beam_dropout > 0 and rng.random() < config.beam_dropout:
        out = beam_dropout(out, rng, config.beam_drop_share, config.beam_bin_deg, config.lidar_origin)
    return out
