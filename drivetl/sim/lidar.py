"""Rig-driven LiDAR simulation: rays from the rig's beams and columns, returns from the scene.

Model (documented in docs/sim.md): a pulse along each range-image pixel's beam direction (Waymo v1
range-image layout, per-beam azimuth offsets included) from the sensor's pose at that column's firing
time (spinning lasers sweep over `spin_period`, the frame's timestamp is when the laser looks
forward). A return needs a surface within [min_range, max_range]; glass lets most pulses through,
foliage gives a first return and lets a second one through; depth edges (a beam's footprint split
between a near and a far surface) give a second return. Intensity is `reflectivity * (0.15 + 0.85
|cos incidence|) / (1 + (range / 60 m)^2)`, encoded as the rig declares; weak returns and a random
fraction drop out; range noise is Gaussian.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from drivetl.calib import LidarModel
from drivetl.sim._random import gaussian
from drivetl.sim._raycast import Hits, RayTiles, SceneCaster, put_rows, rotate
from drivetl.sim.materials import material_index, material_table

__all__ = ["LidarNoise", "LidarScan", "LidarSimulator", "POINT_COLUMNS"]

#: Columns of simulated points (frame: vehicle frame at the frame's timestamp).
POINT_COLUMNS: tuple[str, ...] = ("x", "y", "z", "intensity", "elongation", "return_index")

_MATS = material_table()
_GLASS = material_index("car_glass")
# Per-material lookups with one extra entry at index -1 for "no hit".
_REFLECTIVITY = np.append(_MATS["reflectivity"], 0.0).astype(np.float32)
_TRANSMISSION = np.append(_MATS["transmission"], 0.0).astype(np.float32)
_VEGETATION = np.append(_MATS["vegetation"], False)


@dataclass(frozen=True)
class LidarNoise:
    """range_sigma: metres; dropout: probability a return is lost; weak_return: intensity below which
    a return at max range is lost (scaled by (range / max_range)^2); edge_second_return: probability
    of a second return at a depth edge; spin_period: seconds per sweep; motion: whether spinning lasers
    fire from the ego's pose at each column's time (else all from the frame's pose)."""

    range_sigma: float = 0.02
    dropout: float = 0.01
    weak_return: float = 0.015
    edge_second_return: float = 0.6
    spin_period: float = 0.1
    motion: bool = True

    def exact(self) -> LidarNoise:
        """The same settings without noise, dropouts or weak-return losses (for geometry tests)."""
        return replace(self, range_sigma=0.0, dropout=0.0, weak_return=0.0)


@dataclass(frozen=True, eq=False)
class LidarScan:
    """One laser's simulated frame.

    range_image: (returns, H, W, 4) float32 range (m; -1 = no return), raw intensity, elongation,
        is_in_nlz (-1), Waymo's layout. pixel_pose: (H, W, 6) float32 world_from_vehicle per pixel as
        roll, pitch, yaw, x, y, z, or None when all pixels share the frame's pose.
    points: (N, 6) float32, `POINT_COLUMNS`, vehicle frame at the frame's timestamp, in Waymo's order
        (return 0 row-major, then return 1). actor: (N,) int32 actor index hit by each point (-1 none);
        pixel: (N,) int64 flat range-image pixel (row * W + column) of each point. sway: metres the
        sensor moved away from its frame-time position during the sweep.
    """

    name: str
    range_image: np.ndarray
    pixel_pose: np.ndarray | None
    points: np.ndarray
    actor: np.ndarray
    pixel: np.ndarray
    sway: float = 0.0


def _rpy_xyz(poses: np.ndarray) -> np.ndarray:
    """(n, 4, 4) -> (n, 6) roll, pitch, yaw, x, y, z with R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r = poses[:, :3, :3]
    return np.stack(
        [
            np.arctan2(r[:, 2, 1], r[:, 2, 2]),
            -np.arcsin(np.clip(r[:, 2, 0], -1, 1)),
            np.arctan2(r[:, 1, 0], r[:, 0, 0]),
            *poses[:, :3, 3].T,
        ],
        axis=1,
    )


#: The ego vehicle's lower body in the vehicle frame, (lo, hi) corners in metres (rear axle near x = 0):
#: it hides the ground under the car from bumper-height lasers. Roof-mounted lasers see over it.
EGO_BODY = (np.array([-1.0, -1.0, 0.05]), np.array([3.95, 1.0, 1.0]))


def _body_blocks(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """(N,) bool: rays from `origin` (3,) along (N, 3) directions (vehicle frame) that meet `EGO_BODY`.
    A sensor inside the body blocks nothing (the rig puts it there)."""
    lo, hi = EGO_BODY
    if np.all(origin > lo) and np.all(origin < hi):
        return np.zeros(len(dirs), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t1, t2 = (lo - origin) * inv, (hi - origin) * inv
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    return (t_far >= np.maximum(t_near, 0.0)) & (t_far > 0)


class LidarSimulator:
    """Simulates one `LidarModel` of a rig (directions and culling tiles computed once).

    The ego drives without turning, so every column's sensor orientation is the same and the beam
    directions in the vehicle frame are computed once; the ego's per-column translation moves the
    rays' origins.
    """

    def __init__(self, lidar: LidarModel, noise: LidarNoise | None = None) -> None:
        self.lidar = lidar
        self.noise = noise or LidarNoise()
        self.directions = lidar.beam_directions()  # (H, W, 3) sensor frame, float64
        h, w, _ = self.directions.shape
        self.tiles = RayTiles(self.directions, (min(4, h), 16))
        rot = lidar.vehicle_from_lidar[:3, :3]
        dirs = rotate(self.directions.reshape(-1, 3), rot)
        self._dirs_vehicle = dirs.astype(np.float32)  # (H*W, 3)
        self._dirs_planes = np.ascontiguousarray(self._dirs_vehicle.T).reshape(3, h, w)
        # Rays that meet the ego's own body (fixed in the vehicle frame, like the sensor) never return.
        blocked = _body_blocks(lidar.vehicle_from_lidar[:3, 3], dirs)
        self._free = np.flatnonzero(~blocked)
        moving = lidar.spinning and self.noise.motion
        self.column_time = (
            ((np.arange(w) + 0.5) / w - 0.5) * self.noise.spin_period if moving else np.zeros(w)
        )
        self._rays: tuple[bytes, np.ndarray] | None = None  # (rotation, (H*W, 6) rays) of the last frame

    def simulate(
        self, caster: SceneCaster, t: float, ground: float, rng: np.random.Generator, with_pixel_pose: bool
    ) -> LidarScan:
        """Scan at segment time t (s), ego vehicle origin `-ground` above the road (sets the caster's
        time to t)."""
        lidar, scene = self.lidar, caster.scene
        caster.set_time(t)
        h, w, _ = self.directions.shape
        vl = lidar.vehicle_from_lidar
        frame_pose = scene.ego_poses(np.array([t]), ground)[0]
        poses = scene.ego_poses(t + self.column_time, ground)  # (W, 4, 4) world_from_vehicle
        if not np.allclose(poses[:, :3, :3], frame_pose[:3, :3], atol=1e-9):
            raise NotImplementedError("a turning ego vehicle is not simulated")
        rot = frame_pose[:3, :3]
        # The ego does not turn: column c's sensor origin is the frame-time mounting moved by the ego's
        # travel since the frame's timestamp (vehicle frame: small numbers, float32 suffices).
        origin_v = rotate(poses[:, :3, 3] - frame_pose[:3, 3], rot.T) + vl[:3, 3]  # (W, 3)
        sway = float(np.linalg.norm(origin_v - vl[:3, 3], axis=1).max())
        rays = self._world_rays(rot)
        rays.reshape(h, w, 6)[..., :3] = (poses[:, :3, 3] + rot @ vl[:3, 3])[None]
        hits = self._cast_unblocked(caster, rays)
        hits = self._through_glass(caster, rays, hits, rng)
        images = [self._returns(hits, rays[:, 3:], rng, 1.0)]
        if lidar.returns == 2:
            images.append(self._second(caster, rays, hits, images[0][0][:, 0], rng))
        range_image = np.stack([im[0] for im in images]).reshape(len(images), h, w, 4)
        origin32 = origin_v.astype(np.float32)
        pts, act, pix = [], [], []
        for k, (channels, actor) in enumerate(images):
            r = np.ascontiguousarray(channels[:, 0])
            keep = np.flatnonzero(r > 0)
            p = np.empty((len(keep), 6), np.float32)
            if 4 * len(keep) > len(r):  # most pixels: whole planes, coordinate by coordinate, then kept
                for j in range(3):
                    plane = self._dirs_planes[j] * r.reshape(h, w)
                    plane += origin32[:, j]
                    p[:, j] = np.take(plane.reshape(-1), keep)
            else:  # a few pixels (second returns): only theirs
                xyz = np.take(self._dirs_vehicle, keep, axis=0)
                xyz *= np.take(r, keep)[:, None]
                xyz += np.take(origin32, keep % w, axis=0)
                p[:, :3] = xyz
            p[:, 3:5] = np.take(channels, keep, axis=0)[:, 1:3]  # whole rows: a column would be copied first
            p[:, 5] = k
            pts.append(p)
            act.append(np.take(actor, keep))
            pix.append(keep)
        pixel_pose = None
        if with_pixel_pose:
            pixel_pose = np.broadcast_to(_rpy_xyz(poses).astype(np.float32)[None], (h, w, 6))
        return LidarScan(
            lidar.name,
            range_image,
            pixel_pose,
            np.concatenate(pts),
            np.concatenate(act),
            np.concatenate(pix),
            sway,
        )

    def _world_rays(self, world_from_vehicle_rotation: np.ndarray) -> np.ndarray:
        """(H*W, 6) float32 ray buffer with the directions rotated into the world frame (kept while the
        rotation stays: the ego does not turn); the caller fills the origins."""
        key = world_from_vehicle_rotation.tobytes()
        if self._rays is None or self._rays[0] != key:
            rays = np.empty((len(self._dirs_vehicle), 6), np.float32)
            rays[:, 3:] = rotate(self._dirs_vehicle, world_from_vehicle_rotation)
            self._rays = (key, rays)
        return self._rays[1]

    def _cast_unblocked(self, caster: SceneCaster, rays: np.ndarray) -> Hits:
        """Cast the rays the ego body does not block; blocked ones come back as misses."""
        if len(self._free) == len(rays):
            return caster.cast_rays(rays)
        free = self._free
        part = caster.cast_rays(np.take(rays, free, axis=0))
        n = len(rays)
        hits = Hits(
            np.full(n, np.inf, np.float32),
            np.zeros((n, 3), np.float32),
            np.full(n, -1, np.int16),
            np.full(n, -1, np.int32),
        )
        hits.distance[free], hits.material[free], hits.actor[free] = part.distance, part.material, part.actor
        put_rows(hits.normal, free, part.normal)
        return hits

    def _through_glass(
        self, caster: SceneCaster, rays: np.ndarray, hits: Hits, rng: np.random.Generator
    ) -> Hits:
        glass = np.flatnonzero(hits.material == _GLASS)
        passes = glass[rng.random(len(glass), dtype=np.float32) < _MATS["transmission"][_GLASS]]
        if not len(passes):
            return hits
        step = np.take(hits.distance, passes) + np.float32(0.05)
        sub = np.take(rays, passes, axis=0)
        sub[:, :3] += step[:, None] * sub[:, 3:]
        beyond = caster.cast_rays(sub)
        hits.distance[passes] = step + beyond.distance
        hits.material[passes], hits.actor[passes] = beyond.material, beyond.actor
        put_rows(hits.normal, passes, beyond.normal)
        return hits

    def _returns(
        self,
        hits: Hits,
        dirs: np.ndarray,
        rng: np.random.Generator,
        gain: float,
        extra: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """((n, 4) float32 range-image channels, (n,) actor) of the hits of n rays along (n, 3) `dirs`;
        misses are -1."""
        lidar, noise = self.lidar, self.noise
        n = len(hits.distance)
        dist = hits.distance if extra is None else hits.distance + extra
        if noise.range_sigma > 0:
            dist = dist + gaussian(rng, n, noise.range_sigma)
        # inf (no hit) and NaN fail the upper bound
        ok = (dist >= np.float32(max(lidar.min_range, 1e-3))) & (dist <= np.float32(lidar.max_range))
        cos = hits.normal[:, 0] * dirs[:, 0]
        cos += hits.normal[:, 1] * dirs[:, 1]
        cos += hits.normal[:, 2] * dirs[:, 2]
        cos = np.minimum(np.abs(cos, out=cos), np.float32(1.0), out=cos)
        safe = np.where(ok, dist, np.float32(1.0))
        refl = np.take(_REFLECTIVITY, hits.material)  # material -1 (no hit) reads the appended 0
        q = np.float32(gain) * refl * (0.15 + 0.85 * cos) / (1.0 + (safe * np.float32(1 / 60.0)) ** 2)
        if noise.weak_return > 0:
            ok &= q >= np.float32(noise.weak_return) * (safe * np.float32(1 / lidar.max_range)) ** 2
        if noise.dropout > 0:
            ok &= rng.random(n, dtype=np.float32) >= noise.dropout
        enc = lidar.intensity
        if enc.transform == "tanh":
            raw = q * np.float32(enc.max_value)
        else:
            raw = enc.from_canonical(np.clip(q, 0.0, 1.0)).astype(np.float32)
        none = np.float32(-1.0)
        out = np.empty((n, 4), np.float32)
        out[:, 0] = np.where(ok, safe, none)
        out[:, 1] = np.where(ok, raw, none)
        out[:, 2] = np.where(ok, 0.02 + 0.5 * (1.0 - cos), none)
        out[:, 3] = none
        return out, np.where(ok, hits.actor, np.int32(-1))

    def _second(
        self,
        caster: SceneCaster,
        rays: np.ndarray,
        hits: Hits,
        first_range: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        h, w, _ = self.directions.shape
        img = np.where(first_range > 0, first_range, np.inf).reshape(h, w)
        far = np.zeros((h, w), bool)
        far[:, 1:] |= img[:, :-1] > img[:, 1:] + 1.0
        far[:, :-1] |= img[:, 1:] > img[:, :-1] + 1.0
        far &= np.isfinite(img)
        n = h * w
        cand = far.reshape(-1) & (rng.random(n, dtype=np.float32) < self.noise.edge_second_return)
        veg = (first_range > 0) & np.take(_VEGETATION, hits.material)
        veg &= rng.random(n, dtype=np.float32) < np.take(_TRANSMISSION, hits.material)
        idx = np.flatnonzero(cand | veg)
        out = np.full((n, 4), -1.0, np.float32)
        actor = np.full(n, -1, np.int32)
        if len(idx):
            step = np.take(hits.distance, idx) + np.float32(0.3)
            sub = np.take(rays, idx, axis=0)
            sub[:, :3] += step[:, None] * sub[:, 3:]
            beyond = caster.cast_rays(sub)
            channels, actor[idx] = self._returns(beyond, sub[:, 3:], rng, 0.5, extra=step)
            put_rows(out, idx, channels)
        return out, actor
