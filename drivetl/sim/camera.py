"""Rig-driven camera simulation: one ray per pixel through the rig's camera model.

Each pixel centre (u + 0.5, v + 0.5) is unprojected through the camera's intrinsics and Brown-Conrady
distortion into a ray from the camera's mounting. Colour is the hit material's colour (lane markings
and windows painted procedurally, a small position-hashed texture), Lambertian shading from the
scene's sun plus a sky ambient term, distance haze, a sky gradient where nothing is hit, then sensor
noise and JPEG encoding. Pixels no ray reaches (outside a strong distortion's valid radius) are black.
The camera is exposed at the frame's timestamp (the rolling shutter is not simulated).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from drivetl.calib import CameraModel
from drivetl.sim._raycast import RayTiles, SceneCaster
from drivetl.sim.lidar import _rotated
from drivetl.sim.materials import material_table

__all__ = ["CameraFrame", "CameraSimulator", "encode_jpeg"]

_COLOURS = material_table()["colour"].astype(np.float32)
_HORIZON = np.array([0.78, 0.84, 0.90], np.float32)
_ZENITH = np.array([0.28, 0.48, 0.82], np.float32)
#: Linear [0, 1] in 4096 steps -> sRGB-like gamma in [0, 255].
_SRGB = (np.linspace(0.0, 1.0, 4096) ** (1 / 2.2) * 255).astype(np.float32)
#: Surface texture: a brightness factor per hashed 40 cm cell.
_TEXTURE = (0.86 + 0.28 * np.random.default_rng(7).random(1024)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class CameraFrame:
    """rgb: (H, W, 3) uint8; depth: (H, W) float32 metres along the optical axis (inf: sky or no ray);
    actor: (H, W) int32 actor index seen at each pixel (-1 none)."""

    name: str
    rgb: np.ndarray
    depth: np.ndarray
    actor: np.ndarray


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes (deterministic for the same pixels)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


class CameraSimulator:
    """Simulates one `CameraModel` (pixel rays and culling tiles computed once)."""

    def __init__(self, camera: CameraModel, noise: float = 0.012) -> None:
        self.camera = camera
        self.noise = noise
        h, w = camera.height, camera.width
        v, u = np.mgrid[0:h, 0:w]
        uv = np.stack([u.ravel() + 0.5, v.ravel() + 0.5], 1).astype(np.float64)
        p = np.asarray(camera.unproject(uv, np.ones(len(uv))), np.float64)
        d = p - camera.vehicle_from_camera[:3, 3]
        self.valid = np.all(np.isfinite(d), axis=1)
        d[~self.valid] = camera.vehicle_from_camera[:3, 0]
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        self.directions = d.astype(np.float32)  # (H*W, 3) vehicle frame
        self.axis = camera.vehicle_from_camera[:3, 0]
        self._depth_scale = (d @ self.axis).astype(np.float32)  # optical depth per metre along the ray
        self.tiles = RayTiles((d @ camera.vehicle_from_camera[:3, :3]).reshape(h, w, 3), (16, 16))
        self._cache: dict = {}

    def simulate(
        self, caster: SceneCaster, world_from_vehicle: np.ndarray, rng: np.random.Generator
    ) -> CameraFrame:
        """Render the camera from the (4, 4) ego pose (the dynamic scene must be set to the same time)."""
        cam, scene = self.camera, caster.scene
        h, w = cam.height, cam.width
        n = h * w
        world_from_camera = world_from_vehicle @ cam.vehicle_from_camera
        rays = np.empty((n, 6), np.float32)
        rays[:, :3] = world_from_camera[:3, 3]
        dirs = _rotated(self.directions, world_from_vehicle[:3, :3], self._cache)
        rays[:, 3:] = dirs
        camera_from_world = np.linalg.inv(world_from_camera)
        centres = caster.dynamic_centres @ camera_from_world[:3, :3].T + camera_from_world[:3, 3]
        reach = self.tiles.reaching(centres, caster.dynamic_radii).any(axis=0)
        hits = caster.cast_rays(rays, self.tiles.rays_of(reach))
        hit = np.isfinite(hits.distance) & self.valid
        idx = np.nonzero(hit)[0]
        dist = hits.distance[idx]
        points = world_from_camera[:3, 3] + dist[:, None].astype(np.float64) * dirs[idx]
        normal = hits.normal[idx]
        mats = scene.decorate(points, normal, hits.material[idx])
        cell = np.floor(points * 2.5).astype(np.int64)
        tex = _TEXTURE[(cell[:, 0] * 73856093 ^ cell[:, 1] * 19349663 ^ cell[:, 2] * 83492791) & 1023]
        light = np.float32(0.32) + np.float32(0.78) * np.maximum(normal @ scene.sun.astype(np.float32), 0.0)
        haze = np.exp(dist * np.float32(-1 / 450.0))
        colour = _COLOURS[mats] * (tex * light * haze)[:, None] + _HORIZON * (1 - haze)[:, None]
        up = np.sqrt(np.clip(dirs[:, 2], 0.0, 1.0))[:, None]
        image = _HORIZON * (1 - up) + _ZENITH * up
        image[idx] = colour
        image[~self.valid] = 0.0
        level = np.clip(image * 4095, 0, 4095).astype(np.int32)
        srgb = _SRGB[level]
        if self.noise > 0:
            srgb += rng.standard_normal((n, 3), dtype=np.float32) * np.float32(self.noise * 255)
        rgb = np.clip(srgb + 0.5, 0, 255).astype(np.uint8).reshape(h, w, 3)
        depth = np.full(n, np.inf, np.float32)
        depth[idx] = dist * self._depth_scale[idx]
        actor = np.full(n, -1, np.int32)
        actor[idx] = hits.actor[idx]
        return CameraFrame(cam.name, rgb, depth.reshape(h, w), actor.reshape(h, w))
