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
from drivetl.sim._random import gaussian
from drivetl.sim._raycast import SceneCaster, put_rows, rotate
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
    """Simulates one `CameraModel` (pixel rays computed once)."""

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
        self._cache: dict = {}

    def simulate(
        self, caster: SceneCaster, world_from_vehicle: np.ndarray, rng: np.random.Generator
    ) -> CameraFrame:
        """Render the camera from the (4, 4) ego pose (the dynamic scene must be set to the same time)."""
        cam, scene = self.camera, caster.scene
        h, w = cam.height, cam.width
        n = h * w
        world_from_camera = world_from_vehicle @ cam.vehicle_from_camera
        rays, dirs, sky = self._view(world_from_vehicle[:3, :3])
        rays[:, :3] = world_from_camera[:3, 3]
        hits = caster.cast_rays(rays)
        idx = np.flatnonzero(np.isfinite(hits.distance) & self.valid)
        dist = np.take(hits.distance, idx)
        # Hit points in the world frame (float32: 0.1 mm at a kilometre, far below the 40 cm texture
        # cells and 15 cm lane lines they are used for).
        points = np.take(dirs, idx, axis=0)
        points *= dist[:, None]
        points += world_from_camera[:3, 3].astype(np.float32)
        normal = np.take(hits.normal, idx, axis=0)
        mats = scene.decorate(points, normal, np.take(hits.material, idx))
        # The hash keeps 10 bits, which wrapping 32-bit products give exactly as 64-bit ones would.
        cell = np.floor(points * np.float32(2.5)).astype(np.int32)
        key = cell[:, 0] * np.int32(73856093)
        key ^= cell[:, 1] * np.int32(19349663)
        key ^= cell[:, 2] * np.int32(83492791)
        key &= 1023
        tex = np.take(_TEXTURE, key)
        sun = scene.sun.astype(np.float32)
        lit = normal[:, 0] * sun[0]
        lit += normal[:, 1] * sun[1]
        lit += normal[:, 2] * sun[2]
        light = np.float32(0.32) + np.float32(0.78) * np.maximum(lit, np.float32(0.0), out=lit)
        haze = np.exp(dist * np.float32(-1 / 450.0))
        colour = np.take(_COLOURS, mats, axis=0)
        colour *= (tex * light * haze)[:, None]
        colour += _HORIZON * (1 - haze)[:, None]
        image = sky.copy()
        put_rows(image, idx, colour)
        image *= np.float32(4095)
        level = np.clip(image, 0, 4095, out=image).astype(np.int32)
        srgb = np.take(_SRGB, level)
        # + 0.5: rounding to the nearest level
        if self.noise > 0:
            srgb += gaussian(rng, (n, 3), self.noise * 255, mean=0.5)
        else:
            srgb += np.float32(0.5)
        rgb = np.clip(srgb, 0, 255, out=srgb).astype(np.uint8).reshape(h, w, 3)
        depth = np.full(n, np.inf, np.float32)
        depth[idx] = dist * np.take(self._depth_scale, idx)
        actor = np.full(n, -1, np.int32)
        actor[idx] = np.take(hits.actor, idx)
        return CameraFrame(cam.name, rgb, depth.reshape(h, w), actor.reshape(h, w))

    def _view(self, world_from_vehicle_rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """((H*W, 6) float32 ray buffer with the directions in the world frame (the caller fills the
        origins), (H*W, 3) float32 the directions alone, (H*W, 3) float32 linear sky colour per pixel,
        black where no ray is), kept for the last rotation (the ego does not turn)."""
        key = world_from_vehicle_rotation.tobytes()
        if self._cache.get("key") != key:
            dirs = rotate(self.directions, world_from_vehicle_rotation)
            rays = np.empty((len(dirs), 6), np.float32)
            rays[:, 3:] = dirs
            up = np.sqrt(np.clip(dirs[:, 2], 0.0, 1.0))[:, None]
            sky = _HORIZON * (1 - up) + _ZENITH * up
            sky[~self.valid] = 0.0
            self._cache.clear()
            self._cache.update(key=key, value=(rays, dirs, sky))
        return self._cache["value"]
