"""Small triangle meshes with a material per triangle, and the primitives scenes are built from.

All coordinates are float64 metres in the frame the caller chooses (an object's own frame: x forward,
y left, z up, until `transform` places it). Triangles wind counter-clockwise seen from outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from drivetl.sim.materials import material_index

# Box corner i has x = hi if i & 1, y = hi if i & 2, z = hi if i & 4.
_BOX_FACES = (  # (-x, +x, -y, +y, -z, +z), two triangles each, outward winding
    ((0, 4, 6), (0, 6, 2)),
    ((1, 3, 7), (1, 7, 5)),
    ((0, 1, 5), (0, 5, 4)),
    ((2, 6, 7), (2, 7, 3)),
    ((0, 2, 3), (0, 3, 1)),
    ((4, 5, 7), (4, 7, 6)),
)


@dataclass(frozen=True, eq=False)
class Mesh:
    """vertices (N, 3) float64; triangles (M, 3) int64 vertex indices; materials (M,) int16 ids."""

    vertices: np.ndarray
    triangles: np.ndarray
    materials: np.ndarray

    @staticmethod
    def empty() -> Mesh:
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int16))

    def transform(self, dst_from_src: np.ndarray) -> Mesh:
        """The mesh with vertices mapped by the (4, 4) transform."""
        v = self.vertices @ dst_from_src[:3, :3].T + dst_from_src[:3, 3]
        return Mesh(v, self.triangles, self.materials)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo (3,), hi (3,)) axis-aligned bounds of the vertices."""
        return self.vertices.min(axis=0), self.vertices.max(axis=0)


def merge(meshes: Sequence[Mesh]) -> Mesh:
    """One mesh holding all of `meshes` (triangle order kept)."""
    meshes = [m for m in meshes if len(m.triangles)]
    if not meshes:
        return Mesh.empty()
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.triangles + o for m, o in zip(meshes, offsets, strict=True)]),
        np.concatenate([m.materials for m in meshes]),
    )


def _ids(material: str | Sequence[str], count: int) -> np.ndarray:
    if isinstance(material, str):
        return np.full(count, material_index(material), np.int16)
    if len(material) != count:
        raise ValueError(f"need {count} materials, got {len(material)}")
    return np.array([material_index(m) for m in material], np.int16)


def hexahedron(corners: np.ndarray, material: str | Sequence[str]) -> Mesh:
    """A six-faced solid from 8 corners in box order (see `_BOX_FACES`); one material or six (per face)."""
    tris = np.array(_BOX_FACES, np.int64).reshape(12, 3)
    return Mesh(np.asarray(corners, np.float64), tris, np.repeat(_ids(material, 6), 2))


def box(lo: Sequence[float], hi: Sequence[float], material: str | Sequence[str]) -> Mesh:
    """Axis-aligned box between corners `lo` and `hi` (3,)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    i = np.arange(8)
    corners = np.stack(
        [np.where(i & 1, hi[0], lo[0]), np.where(i & 2, hi[1], lo[1]), np.where(i & 4, hi[2], lo[2])], 1
    )
    return hexahedron(corners, material)


def tapered_box(
    bottom: tuple[float, float, float, float],
    top: tuple[float, float, float, float],
    z0: float,
    z1: float,
    material: str | Sequence[str],
) -> Mesh:
    """A solid whose bottom rectangle (x0, x1, y0, y1) at z0 narrows to the top rectangle at z1
    (a car's cabin: sloped windscreen and rear window)."""
    i = np.arange(8)
    up = (i & 4) > 0
    rect = np.where(up[:, None], np.array(top, float)[None], np.array(bottom, float)[None])
    x = np.where(i & 1, rect[:, 1], rect[:, 0])
    y = np.where(i & 2, rect[:, 3], rect[:, 2])
    z = np.where(up, z1, z0)
    return hexahedron(np.stack([x, y, z], 1), material)


def prism(
    centre: Sequence[float],
    radius: float,
    length: float,
    axis: int,
    material: str,
    sides: int = 8,
) -> Mesh:
    """A closed regular prism (a cylinder with `sides` facets) of `radius` around `centre` (3,), `length`
    along coordinate `axis` (0 = x, 1 = y, 2 = z)."""
    a = (np.arange(sides) + 0.5) * 2 * np.pi / sides
    ring = np.stack([np.cos(a), np.sin(a)], 1) * radius
    u, v = [k for k in range(3) if k != axis]
    verts = np.zeros((2 * sides + 2, 3))
    for half, sign in ((0, -0.5), (1, 0.5)):
        sl = slice(half * sides, (half + 1) * sides)
        verts[sl, u], verts[sl, v], verts[sl, axis] = ring[:, 0], ring[:, 1], sign * length
    verts[2 * sides, axis], verts[2 * sides + 1, axis] = -0.5 * length, 0.5 * length
    verts += np.asarray(centre, float)
    k = np.arange(sides)
    n = (k + 1) % sides
    tris = [
        np.stack([k, n, sides + n], 1),
        np.stack([k, sides + n, sides + k], 1),
        np.stack([np.full(sides, 2 * sides), n, k], 1),
        np.stack([np.full(sides, 2 * sides + 1), sides + k, sides + n], 1),
    ]
    tris = np.concatenate(tris).astype(np.int64)
    # (u, v, axis) must be right-handed for the winding above; flip otherwise.
    if (u, v) == (0, 2):
        tris = tris[:, ::-1]
    return Mesh(verts, tris, _ids(material, len(tris)))


def _icosphere() -> tuple[np.ndarray, np.ndarray]:
    t = (1 + 5**0.5) / 2
    v = np.array(
        [
            [-1, t, 0],
            [1, t, 0],
            [-1, -t, 0],
            [1, -t, 0],
            [0, -1, t],
            [0, 1, t],
            [0, -1, -t],
            [0, 1, -t],
            [t, 0, -1],
            [t, 0, 1],
            [-t, 0, -1],
            [-t, 0, 1],
        ],
        float,
    )
    f = np.array(
        [
            [0, 11, 5],
            [0, 5, 1],
            [0, 1, 7],
            [0, 7, 10],
            [0, 10, 11],
            [1, 5, 9],
            [5, 11, 4],
            [11, 10, 2],
            [10, 7, 6],
            [7, 1, 8],
            [3, 9, 4],
            [3, 4, 2],
            [3, 2, 6],
            [3, 6, 8],
            [3, 8, 9],
            [4, 9, 5],
            [2, 4, 11],
            [6, 2, 10],
            [8, 6, 7],
            [9, 8, 1],
        ],
        np.int64,
    )
    verts = list(v / np.linalg.norm(v, axis=1, keepdims=True))
    cache: dict[tuple[int, int], int] = {}

    def mid(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = verts[a] + verts[b]
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    faces = []
    for a, b, c in f:
        ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
        faces += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
    return np.array(verts), np.array(faces, np.int64)


_ICO_V, _ICO_F = _icosphere()


def blob(
    centre: Sequence[float],
    radii: Sequence[float],
    material: str,
    rng: np.random.Generator,
    jitter: float = 0.15,
) -> Mesh:
    """A lumpy ellipsoid (80 triangles) with semi-axes `radii` (3,) and radial `jitter` (fraction)."""
    scale = 1 + jitter * rng.uniform(-1, 1, len(_ICO_V))
    verts = _ICO_V * scale[:, None] * np.asarray(radii, float) + np.asarray(centre, float)
    return Mesh(verts, _ICO_F.copy(), _ids(material, len(_ICO_F)))


def yaw_transform(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    """(4, 4) transform: rotation `yaw` (radians) about +z, then translation (x, y, z)."""
    c, s = np.cos(yaw), np.sin(yaw)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = (x, y, z)
    return m
