"""Ray casting against a scene with open3d's `RaycastingScene` (Embree), imported lazily.

The static mesh is put in one ray-casting scene that is built once per `Scene` and reused for
every frame; the moving actors go in a small scene rebuilt per time. Rays are cast against the
static scene all at once; only the rays whose cone can reach a moving actor (see `RayTiles`) are
cast against the moving ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivetl.sim.scene import Scene

_INVALID = 2**32 - 1


@dataclass(frozen=True, eq=False)
class Hits:
    """First hits of N rays. distance: (N,) float32 metres along the unit ray (inf: no hit);
    normal: (N, 3) float32 unit, facing the ray's origin; material: (N,) int16 (-1: no hit); actor: (N,)
    int32 index into `Scene.actors` (-1: unlabelled surface or no hit)."""

    distance: np.ndarray
    normal: np.ndarray
    material: np.ndarray
    actor: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return np.isfinite(self.distance)


class RayTiles:
    """Groups a sensor's rays, given as a (H, W, 3) grid of unit directions in the sensor frame, into
    tiles of neighbouring rays, each bounded by a cone (axis, half angle), for culling: which rays can
    reach a sphere."""

    def __init__(self, directions: np.ndarray, tile: tuple[int, int]) -> None:
        h, w, _ = directions.shape
        th, tw = tile
        nh, nw = -(-h // th), -(-w // tw)
        index = np.full((nh * th, nw * tw), -1, np.int64)
        index[:h, :w] = np.arange(h * w).reshape(h, w)
        self.pixels = index.reshape(nh, th, nw, tw).transpose(0, 2, 1, 3).reshape(nh * nw, th * tw)
        flat = directions.reshape(-1, 3)
        valid = self.pixels >= 0
        d = np.where(valid[..., None], flat[np.maximum(self.pixels, 0)], 0.0)
        axis = d.sum(axis=1)
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        cosines = np.where(valid, np.einsum("tpk,tk->tp", d, axis), 1.0)
        self.axis = axis
        self.half_angle = np.arccos(np.clip(cosines.min(axis=1), -1.0, 1.0)) + 1e-4
        if self.half_angle.max() >= np.pi / 2:
            raise ValueError(f"ray tiles of {tile} are too wide for cone culling")
        self._cos_half, self._sin_half = np.cos(self.half_angle), np.sin(self.half_angle)

    def reaching(self, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
        """(K, T) bool: tile t may hold a ray that meets sphere k. centres: (K, 3) in the sensor frame
        (rays start at its origin), radii: (K,) metres."""
        dist = np.linalg.norm(centres, axis=1)
        inside = dist <= radii
        sin_a = np.clip(radii / np.maximum(dist, 1e-9), 0.0, 1.0)
        cos_a = np.sqrt(1.0 - sin_a * sin_a)
        u = centres / np.maximum(dist, 1e-9)[:, None]
        # angle <= half + alpha  <=>  cos(angle) >= cos(half + alpha) (both below pi: half angles are small)
        limit = np.multiply.outer(cos_a, self._cos_half)
        limit -= np.multiply.outer(sin_a, self._sin_half)
        return (u @ self.axis.T >= limit) | inside[:, None]

    def rays_of(self, tiles: np.ndarray) -> np.ndarray:
        """Indices of the rays in the tiles selected by the (T,) bool mask `tiles` (tiles are disjoint)."""
        px = self.pixels[tiles].ravel()
        return px[px >= 0]


class SceneCaster:
    """Casts rays into a `Scene` (static scene built once; moving actors per `set_time`)."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self._static = _build(scene.static_mesh.vertices, scene.static_mesh.triangles)
        self._static_mat = np.append(scene.static_mesh.materials, -1).astype(np.int16)
        self._static_actor = np.append(scene.static_actor, -1).astype(np.int32)
        self._time: float | None = None
        self._dynamic = None
        self._ids = np.array(scene.dynamic, np.int64)
        meshes = [scene.actors[i].mesh for i in self._ids]
        self._local = np.concatenate([m.vertices for m in meshes]) if meshes else np.zeros((0, 3))
        self._owner = np.repeat(np.arange(len(meshes)), [len(m.vertices) for m in meshes]).astype(np.int64)
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])[:-1]
        self._tris = (
            np.concatenate([m.triangles + o for m, o in zip(meshes, offsets, strict=True)])
            if meshes
            else np.zeros((0, 3), np.int64)
        )
        self._dyn_mat = np.concatenate([m.materials for m in meshes]) if meshes else np.zeros(0, np.int16)
        self._dyn_actor = np.repeat(self._ids, [len(m.triangles) for m in meshes]).astype(np.int32)
        self._radii = np.array([0.5 * float(np.linalg.norm(scene.actors[i].size)) + 0.05 for i in self._ids])
        self.dynamic_centres = np.zeros((0, 3))
        self.dynamic_radii = self._radii

    def set_time(self, t: float) -> None:
        """Pose the moving actors at time t (seconds); rebuilds the small dynamic scene."""
        if self._time == t:
            return
        self._time = t
        if not len(self._ids):
            return
        world_from_actor = self.scene.world_from_road[None] @ self.scene.actor_poses(t, self._ids)
        rot, trans = world_from_actor[:, :3, :3], world_from_actor[:, :3, 3]
        verts = np.einsum("nij,nj->ni", rot[self._owner], self._local) + trans[self._owner]
        self._dynamic = _build(verts, self._tris)
        self.dynamic_centres = trans

    def cast(
        self, origins: np.ndarray, directions: np.ndarray, dynamic_rays: np.ndarray | None = None
    ) -> Hits:
        """First hits of rays (origins (N, 3) or (3,), directions (N, 3) unit, world frame, metres).

        dynamic_rays: indices of the rays that may meet a moving actor (None: all of them).
        """
        rays = np.empty((len(directions), 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = directions
        return self.cast_rays(rays, dynamic_rays)

    def cast_rays(self, rays: np.ndarray, dynamic_rays: np.ndarray | None = None) -> Hits:
        """First hits of (N, 6) float32 rays (origin, unit direction; world frame) in one call per
        ray-casting scene. Hits hold float32 distances and normals."""
        n = len(rays)
        static = self._static.cast_rays(_tensor(rays))
        dist = static["t_hit"].numpy()
        prim = static["primitive_ids"].numpy()
        normal = static["primitive_normals"].numpy()
        hit = np.isfinite(dist)
        safe = np.where(hit, prim, 0)
        material = np.where(hit, self._static_mat[safe], -1).astype(np.int16)
        actor = np.where(hit, self._static_actor[safe], -1).astype(np.int32)
        if self._dynamic is not None:
            sub = np.arange(n) if dynamic_rays is None else dynamic_rays
            if len(sub):
                dyn = self._dynamic.cast_rays(_tensor(rays[sub]))
                d_dist = dyn["t_hit"].numpy()
                closer = d_dist < dist[sub]
                idx = sub[closer]
                d_prim = dyn["primitive_ids"].numpy()[closer]
                dist[idx] = d_dist[closer]
                normal[idx] = dyn["primitive_normals"].numpy()[closer]
                material[idx] = self._dyn_mat[d_prim]
                actor[idx] = self._dyn_actor[d_prim]
        flip = np.einsum("ij,ij->i", normal, rays[:, 3:]) > 0
        normal[flip] *= -1
        return Hits(dist, normal, material, actor)


def _tensor(a: np.ndarray):
    import open3d as o3d

    return o3d.core.Tensor.from_numpy(np.ascontiguousarray(a))


def _build(vertices: np.ndarray, triangles: np.ndarray):
    import open3d as o3d

    rc = o3d.t.geometry.RaycastingScene()
    if len(triangles):
        rc.add_triangles(_tensor(vertices.astype(np.float32)), _tensor(triangles.astype(np.uint32)))
    return rc
