"""Batched pinhole + Brown–Conrady projection in torch, driven by a batch's camera tensors.

The same model as `drivetl.calib.CameraModel.project` (u = fx * x_d + cx, no half-pixel shift; image
spans [0, width) x [0, height)), vectorized over frames and views so the BEV lift is one call.
"""

from __future__ import annotations

import torch

__all__ = ["OPTICAL_FROM_CAMERA_T", "project_points"]

#: Waymo camera frame (x fwd, y left, z up) -> OpenCV optical frame (x right, y down, z fwd).
OPTICAL_FROM_CAMERA_T = torch.tensor(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def project_points(
    points: torch.Tensor,
    camera_K: torch.Tensor,
    distortion: torch.Tensor,
    camera_from_vehicle: torch.Tensor,
    image_size: torch.Tensor,
    min_depth: float = 0.1,
    fov_margin: float = 1.25,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project vehicle-frame points into every (frame, view).

    points: (P, 3) float32 vehicle frame, metres (shared by all frames and views).
    camera_K: (B, V, 3, 3); distortion: (B, V, 5) k1, k2, p1, p2, k3; camera_from_vehicle: (B, V, 4, 4);
    image_size: (B, V, 2) width, height (pixels).
    Returns uv (B, V, P, 2) pixels, depth (B, V, P) metres along the optical axis, and in_image
    (B, V, P) bool: depth > min_depth, the undistorted ray within `fov_margin` times the image's
    extent (so the distortion polynomial is not evaluated far outside its valid range), and
    0 <= u < width, 0 <= v < height.
    """
    # Always float32, also under autocast: in bfloat16 a point 75 m away is rounded to 0.5 m and its
    # pixel moves by several pixels (and in/out of the image).
    with torch.autocast(points.device.type, enabled=False):
        return _project(
            _full(points), _full(camera_K), _full(distortion), _full(camera_from_vehicle),
            image_size, min_depth, fov_margin,
        )


def _full(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32 and float64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _project(
    points: torch.Tensor,
    camera_K: torch.Tensor,
    distortion: torch.Tensor,
    camera_from_vehicle: torch.Tensor,
    image_size: torch.Tensor,
    min_depth: float,
    fov_margin: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    opt = OPTICAL_FROM_CAMERA_T.to(camera_from_vehicle) @ camera_from_vehicle  # (B, V, 4, 4)
    cam = torch.einsum("bvij,pj->bvpi", opt[..., :3, :3], points) + opt[..., None, :3, 3]
    depth = cam[..., 2]
    z = depth.clamp(min=min_depth)
    x, y = cam[..., 0] / z, cam[..., 1] / z
    fx, fy = camera_K[..., 0, 0, None], camera_K[..., 1, 1, None]
    cx, cy = camera_K[..., 0, 2, None], camera_K[..., 1, 2, None]
    w, h = image_size[..., 0, None].to(x), image_size[..., 1, None].to(x)
    xlim = fov_margin * torch.maximum(cx, w - cx) / fx
    ylim = fov_margin * torch.maximum(cy, h - cy) / fy
    ok = (depth > min_depth) & (x.abs() < xlim) & (y.abs() < ylim)
    x, y = torch.where(ok, x, torch.zeros_like(x)), torch.where(ok, y, torch.zeros_like(y))
    k1, k2, p1, p2, k3 = (distortion[..., i, None] for i in range(5))
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    u, v = fx * xd + cx, fy * yd + cy
    ok = ok & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    return torch.stack([u, v], -1), depth, ok
