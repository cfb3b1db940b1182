"""Renders of one frame: a bird's-eye view and each camera's image with the 3D boxes drawn on it.

Both take a canonical `Sample` (its points, ground truth and cameras in the canonical vehicle frame)
and predictions in the same frame. Ground truth is drawn green and solid; predictions in their class
colour (dashed in the bird's-eye view), only those scoring at least `score`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["box_corners", "render_bev", "render_cameras"]

_COLOURS = {
    "vehicle": (31, 119, 180),
    "pedestrian": (255, 127, 14),
    "cyclist": (148, 103, 189),
    "sign": (214, 39, 40),
}
_GT = (44, 160, 44)
#: corner index pairs of a box's 12 edges (corners as `box_corners` orders them)
_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "frame"


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 8, 3) corners of boxes (M, 7) ``x, y, z, l, w, h, heading`` (centre z): bottom face first,
    counter-clockwise from the front left, then the top face in the same order."""
    b = np.asarray(boxes, np.float64).reshape(-1, 7)
    sx = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    lx, ly, lz = b[:, 3:4] * sx, b[:, 4:5] * sy, b[:, 5:6] * sz
    c, s = np.cos(b[:, 6:7]), np.sin(b[:, 6:7])
    x = b[:, 0:1] + c * lx - s * ly
    y = b[:, 1:2] + s * lx + c * ly
    z = b[:, 2:3] + lz
    return np.stack([x, y, z], -1)


def render_bev(
    out: Path, sample, detections, score: float, region: Sequence[float] | None, name: str = ""
) -> Path:
    """The bird's-eye view of `sample` with `detections` (eval `Detections`) under ``out/bev/``."""
    from drivetl.eval import write_bev_frame

    extent = max(abs(v) for v in region) + 2.0 if region is not None else None
    label = f"{name}: {sample.key}" if name else str(sample.key)
    path = out / "bev" / f"{_slug(str(sample.key))}{'__' + _slug(name) if name else ''}.png"
    return write_bev_frame(
        path,
        sample.boxes,
        detections,
        points=sample.points[:, :3],
        extent=extent,
        score_threshold=score,
        title=label,
    )


def render_cameras(out: Path, sample, detections, score: float, name: str = "") -> list[tuple[str, Path]]:
    """One image per camera of `sample` that has one, boxes projected with the camera model, under
    ``out/camera/``; returns (label, path) pairs (empty for a frame without images)."""
    from PIL import Image, ImageDraw

    from drivetl._io import atomic_write

    shown = []
    keep = detections.scores >= score
    sets = [(sample.boxes.boxes, [_GT] * len(sample.boxes), 2)]
    sets.append(
        (
            detections.boxes[keep],
            [_COLOURS.get(c, (214, 39, 40)) for c, k in zip(detections.classes, keep, strict=True) if k],
            2,
        )
    )
    for cam in sample.cameras:
        image = sample.images.get(cam.name)
        if image is None:
            continue
        img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
        sx, sy = img.width / cam.width, img.height / cam.height
        draw = ImageDraw.Draw(img)
        for boxes, colours, width in sets:
            if not len(boxes):
                continue
            corners = box_corners(boxes)
            uv, depth, _ = cam.project(corners.reshape(-1, 3))
            uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
            for i in range(len(boxes)):
                if (depth[i] <= 0.1).any():
                    continue  # a box partly behind the camera is not drawn
                for a, b in _EDGES:
                    draw.line(
                        [(uv[i, a, 0] * sx, uv[i, a, 1] * sy), (uv[i, b, 0] * sx, uv[i, b, 1] * sy)],
                        fill=colours[i],
                        width=width,
                    )
        path = (
            out
            / "camera"
            / f"{_slug(str(sample.key))}__{_slug(cam.name)}{'__' + _slug(name) if name else ''}.png"
        )
        with atomic_write(path, "wb") as f:
            img.save(f, format="PNG")
        shown.append((f"{name + ': ' if name else ''}{sample.key} camera {cam.name}", path))
    return shown
