"""Ray casting against a scene with open3d's `RaycastingScene` (Embree), imported lazily.

Per time (frame), one ray-casting scene holds the static mesh and the moving actors posed at that
time; every ray of a sensor is cast against it in one call. (Keeping the static scene and casting
again against a small scene of the moving actors costs more here: the culled second cast of about
a third of the rays outweighs rebuilding Embree's hierarchy of some 30k triangles, a few ms.) The
vertex and triangle buffers are laid out once per scene; a frame only writes the moving actors'
vertices. Large arrays are transformed with explicit products rather than BLAS (`rotate`), which
spends more time starting threads than computing on (N, 3) x (3, 3) products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivetl.sim.scene import Scene

#: Casts of fewer rays than this run on one thread (starting the thread pool costs about a millisecond).
_PARALLEL_RAYS = 65_536


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


def rotate(vectors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(N, 3) `vectors` (float32 or float64) multiplied by the (3, 3) `rotation` (row i of the result is
    rotation @ vectors[i]), in the vectors' dtype, without BLAS."""
    r = rotation.astype(vectors.dtype, copy=False)
    out = vectors[:, 0:1] * r[:, 0]
    out += vectors[:, 1:2] * r[:, 1]
    out += vectors[:, 2:3] * r[:, 2]
    return out


def put_rows(dst: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """dst[idx] = rows for a C-contiguous (N, K) `dst`, through a one-dimensional view of whole rows
    (several times faster than numpy's row scatter). Row gathers use `np.take(a, idx, axis=0)`."""
    row = np.dtype((np.void, dst.shape[1] * dst.itemsize))
    np.put(dst.view(row).reshape(-1), idx, np.ascontiguousarray(rows, dst.dtype).view(row).reshape(-1))


def transform(dst_from_src: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 3) points mapped by the (4, 4) transform, in the points' dtype, without BLAS."""
    out = rotate(points, dst_from_src[:3, :3])
    out += dst_from_src[:3, 3].astype(points.dtype, copy=False)
    return out


class RayTiles:
    """Groups a sensor's rays, given as a (H, W, 3) grid of unit directions in the sensor frame, into
    tiles of neighbouring rays, each bounded by a cone (axis, half angle), for culling: which rays can
    reach a sphere. pixels: (T, tile size) int64 flat ray index of each tile's rays (-1: padding)."""

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
        return (np.einsum("kc,tc->kt", u, self.axis) >= limit) | inside[:, None]


class SceneCaster:
    """Casts rays into a `Scene` at the time set by `set_time` (the ray-casting scene is rebuilt then;
    time 0 until it is first called).

    threads: threads of a large cast and of the rebuild (0: all cores; 1 where several worker processes
    share the cores). The results do not depend on it.
    """

    def __init__(self, scene: Scene, threads: int = 0) -> None:
        self.scene = scene
        self.threads = threads
        self._time: float | None = None
        self._rc = None
        self._ids = np.array(scene.dynamic, np.int64)
        static = scene.static_mesh
        meshes = [scene.actors[i].mesh for i in self._ids]
        n_static = len(static.vertices)
        counts = [len(m.vertices) for m in meshes]
        offsets = n_static + np.cumsum([0] + counts)[:-1]
        #: (V, 3) float32 vertices: the static mesh's, then the moving actors' (written per time).
        self._vertices = np.zeros((n_static + sum(counts), 3), np.float32)
        self._vertices[:n_static] = static.vertices
        self._triangles = np.concatenate(
            [static.triangles] + [m.triangles + o for m, o in zip(meshes, offsets, strict=True)]
        ).astype(np.uint32)
        self._local = np.concatenate([m.vertices for m in meshes]) if meshes else np.zeros((0, 3))
        self._owner = np.repeat(np.arange(len(meshes)), counts).astype(np.int64)
        # Lookups by primitive id; the extra last entry answers misses (open3d's invalid id, clipped).
        self._material = np.concatenate([static.materials] + [m.materials for m in meshes] + [[-1]]).astype(
            np.int16
        )
        moving = [np.full(len(m.triangles), i) for m, i in zip(meshes, self._ids, strict=True)]
        self._actor = np.concatenate([scene.static_actor, *moving, [-1]]).astype(np.int32)

    def set_time(self, t: float) -> None:
        """Pose the moving actors at time t (seconds) and rebuild the ray-casting scene."""
        if self._time == t and self._rc is not None:
            return
        self._time = t
        if len(self._ids):
            world_from_actor = self.scene.world_from_road[None] @ self.scene.actor_poses(t, self._ids)
            rot, trans = world_from_actor[:, :3, :3], world_from_actor[:, :3, 3]
            verts = np.einsum("nij,nj->ni", rot[self._owner], self._local) + trans[self._owner]
            self._vertices[len(self._vertices) - len(verts) :] = verts
        self._rc = _build(self._vertices, self._triangles, self.threads)

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> Hits:
        """First hits of rays (origins (N, 3) or (3,), directions (N, 3) unit, world frame, metres)."""
        rays = np.empty((len(directions), 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = directions
        return self.cast_rays(rays)

    def cast_rays(self, rays: np.ndarray) -> Hits:
        """First hits of (N, 6) float32 rays (origin, unit direction; world frame), in one call."""
        if self._rc is None:
            self.set_time(0.0)
        out = self._rc.cast_rays(_tensor(rays), nthreads=self.threads if len(rays) >= _PARALLEL_RAYS else 1)
        dist = out["t_hit"].numpy()
        normal = out["primitive_normals"].numpy()
        prim = np.minimum(out["primitive_ids"].numpy(), len(self._material) - 1).astype(np.intp)
        facing = normal[:, 0] * rays[:, 3]
        facing += normal[:, 1] * rays[:, 4]
        facing += normal[:, 2] * rays[:, 5]
        normal *= np.where(facing > 0, np.float32(-1), np.float32(1))[:, None]
        return Hits(dist, normal, np.take(self._material, prim), np.take(self._actor, prim))


def _tensor(a: np.ndarray):
    import open3d as o3d

    return o3d.core.Tensor.from_numpy(np.ascontiguousarray(a))


def _build(vertices: np.ndarray, triangles: np.ndarray, threads: int = 0):
    import open3d as o3d

    rc = o3d.t.geometry.RaycastingScene(nthreads=threads)
    if len(triangles):
        rc.add_triangles(
            _tensor(vertices.astype(np.float32, copy=False)), _tensor(triangles.astype(np.uint32, copy=False))
        )
    return rc
