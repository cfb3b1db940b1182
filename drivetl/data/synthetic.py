"""Seeded synthetic `Sample`s (boxes made of surface points on a flat ground, two small cameras).

A tiny, dependency-free scene for unit tests and the training benchmark (its rig: the two cameras,
no LiDAR model); the simulator (`drivetl simulate`) makes the realistic data. Geometry follows
DESIGN.md: canonical vehicle frame, ground at z = 0, boxes ``x, y, z, l, w, h, heading``, cameras
in Waymo's camera frame.
"""

from __future__ import annotations

import math

import numpy as np

from drivetl.calib.camera import CameraModel
from drivetl.calib.rig import SensorRig
from drivetl.calib.rig_vector import rig_vector
from drivetl.data.records import Boxes, FrameKey, Sample

__all__ = ["synthetic_cameras", "synthetic_sample"]

_SIZES = {"vehicle": (4.5, 1.9, 1.6), "pedestrian": (0.8, 0.8, 1.8), "cyclist": (1.8, 0.7, 1.7)}
_COLOURS = {"vehicle": (220, 40, 40), "pedestrian": (40, 220, 40), "cyclist": (40, 40, 220)}


def synthetic_cameras(width: int = 64, height: int = 48) -> tuple[CameraModel, ...]:
    """A front camera and a left camera at 1.6 m, 90-degree-ish field of view, mild distortion."""
    cams = []
    for name, yaw in (("FRONT", 0.0), ("SIDE_LEFT", math.pi / 2)):
        c, s = math.cos(yaw), math.sin(yaw)
        v = np.array([[c, -s, 0, 0.5 * c], [s, c, 0, 0.5 * s], [0, 0, 1, 1.6], [0, 0, 0, 1.0]])
        cams.append(
            CameraModel(
                name=name,
                width=width,
                height=height,
                fx=width / 2,
                fy=width / 2,
                cx=width / 2,
                cy=height / 2,
                k1=-0.05,
                k2=0.01,
                vehicle_from_camera=v,
            )
        )
    return tuple(cams)


def _box_surface(box: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) points on the side faces and top of `box` (x, y, z, l, w, h, heading)."""
    x, y, z, l, w, h, yaw = box
    u = rng.uniform(-0.5, 0.5, (n, 3))
    face = rng.integers(0, 5, n)
    u[face == 0, 0], u[face == 1, 0] = 0.5, -0.5
    u[face == 2, 1], u[face == 3, 1] = 0.5, -0.5
    u[face == 4, 2] = 0.5
    local = u * np.array([l, w, h])
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack(
        [x + c * local[:, 0] - s * local[:, 1], y + s * local[:, 0] + c * local[:, 1], z + local[:, 2]], 1
    )


def synthetic_sample(
    seed: int,
    *,
    extent: float = 24.0,
    num_boxes: int = 8,
    ground_points: int = 3000,
    cameras: bool = True,
    image_size: tuple[int, int] = (48, 64),
) -> Sample:
    """A seeded frame: `num_boxes` objects (vehicle/pedestrian/cyclist) within ±`extent` m.

    Points have columns x, y, z, intensity, elongation (float32). With `cameras`, two (H, W) images
    where the boxes' points are painted in a class colour over a grey, noisy background.
    """
    rng = np.random.default_rng(seed)
    names = rng.choice(sorted(_SIZES), num_boxes)
    boxes, pts, classes = [], [], []
    for name in names:
        l, w, h = np.array(_SIZES[name]) * rng.uniform(0.9, 1.1, 3)
        for _ in range(20):
            x, y = rng.uniform(-extent, extent, 2)
            if math.hypot(x, y) > 3 and all(math.hypot(x - b[0], y - b[1]) > 5 for b in boxes):
                break
        box = np.array([x, y, h / 2, l, w, h, rng.uniform(-math.pi, math.pi)])
        boxes.append(box)
        classes.append(str(name))
        pts.append(_box_surface(box, int(rng.integers(60, 160)), rng))
    ground = np.column_stack(
        [rng.uniform(-extent - 4, extent + 4, (ground_points, 2)), rng.normal(0, 0.03, ground_points)]
    )
    xyz = np.concatenate([ground, *pts], 0)
    n_obj = xyz.shape[0] - ground_points
    intensity = np.concatenate([rng.uniform(0, 0.2, ground_points), rng.uniform(0.3, 1.0, n_obj)])
    elongation = rng.uniform(0, 0.1, xyz.shape[0])
    points = np.column_stack([xyz, intensity, elongation]).astype(np.float32)
    images, cams = {}, ()
    if cameras:
        cams = synthetic_cameras(image_size[1], image_size[0])
        for cam in cams:
            img = rng.normal(110, 10, (cam.height, cam.width, 3))
            for box, name in zip(boxes, classes, strict=True):
                uv, depth, ok = cam.project(_box_surface(box, 400, rng))
                uv = uv[ok].astype(int)
                img[uv[:, 1], uv[:, 0]] = _COLOURS[name]
            images[cam.name] = np.clip(img, 0, 255).astype(np.uint8)
    return Sample(
        key=FrameKey("synthetic", seed),
        points=points,
        columns=("x", "y", "z", "intensity", "elongation"),
        boxes=Boxes(np.array(boxes).reshape(-1, 7), tuple(classes)),
        images=images,
        cameras=cams,
        rig_name="synthetic",
        rig_vector=rig_vector(SensorRig("synthetic", cameras=cams or synthetic_cameras(*image_size[::-1]))),
    )
