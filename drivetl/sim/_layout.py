"""Where things go: the road's cross-section, lanes and lane lines, buildings, street furniture, traffic.

Everything here is in the road frame: x along the road, y to the left, z up (metres); the road's
centre line is y = 0, traffic on y < 0 drives towards +x, on y > 0 towards -x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drivetl.sim import _actors
from drivetl.sim._mesh import Mesh, box, yaw_transform
from drivetl.sim.materials import FACADES, material_index
from drivetl.sim.regions import RegionStats

CURB_HEIGHT = 0.15
ROAD_CAMBER = 0.02
FAR_Y = 90.0


@dataclass(frozen=True)
class Lane:
    """A lane: centre `y`, travel direction (+1: towards +x, -1: towards -x), kind traffic/bike/parking."""

    y: float
    width: float
    direction: int
    kind: str


@dataclass(frozen=True)
class Road:
    """The cross-section (profile_y ascending, profile_z offsets, material of each segment), the
    road's edges (curb lines) per side, sidewalk widths, lanes and lane lines (y, material id, dash
    length, period; dash 0 = solid)."""

    profile_y: np.ndarray
    profile_z: np.ndarray
    segment_materials: np.ndarray
    edge: dict[int, float]
    sidewalk: dict[int, float]
    lanes: tuple[Lane, ...]
    lines: tuple[tuple[float, int, float, float], ...]


def road_layout(rng: np.random.Generator, region: RegionStats) -> Road:
    lw = region.lane_width
    lanes: list[Lane] = []
    lines: list[tuple[float, int, float, float]] = []
    white, yellow = material_index("lane_white"), material_index("lane_yellow")
    centre = (0.0, yellow, 0.0, 0.0) if region.yellow_centre_line else (0.0, white, 3.0, 9.0)
    lines.append(centre)
    edge, sidewalk = {}, {}
    for side in (-1, 1):
        n = int(rng.choice([1, 2], p=[0.55, 0.45]))
        bike = 1.6 if rng.random() < 0.45 else 0.0
        park = 2.3 if rng.random() < 0.65 else 0.0
        direction = 1 if side < 0 else -1
        for k in range(n):
            lanes.append(Lane(side * (k + 0.5) * lw, lw, direction, "traffic"))
            if k:
                lines.append((side * k * lw, white, 3.0, 12.0 if region.name == "us" else 9.0))
        y = n * lw
        lines.append((side * (y - 0.3 if not (bike or park) else y), white, 0.0, 0.0))
        if bike:
            lanes.append(Lane(side * (y + bike / 2), bike, direction, "bike"))
            y += bike
            if park:
                lines.append((side * y, white, 0.0, 0.0))
        if park:
            lanes.append(Lane(side * (y + park / 2), park, direction, "parking"))
            y += park
        edge[side] = y
        sidewalk[side] = float(rng.uniform(2.0, 5.0))
    asphalt, curb, walk = material_index("asphalt"), material_index("curb"), material_index("sidewalk")
    terrain = material_index(str(rng.choice(["grass", "dirt"], p=[0.7, 0.3])))
    profile = {}
    for side in (-1, 1):
        e, sw = edge[side], sidewalk[side]
        z_edge = -ROAD_CAMBER * e
        z_walk = z_edge + CURB_HEIGHT
        far_slope = rng.uniform(-0.04, 0.06)
        pts = [
            (e, z_edge, asphalt),
            (e + 0.01, z_walk, curb),
            (e + 0.25, z_walk, curb),
            (e + sw, z_walk + 0.01 * sw, walk),
        ]
        # terrain in strips a few metres wide (long thin triangles make slow ray-casting hierarchies)
        for y in np.linspace(e + sw, FAR_Y, 12)[1:]:
            pts.append((float(y), z_walk + 0.01 * sw + far_slope * (y - e - sw), terrain))
        profile[side] = pts
    # Mirror the right side; each point carries the material of the segment on its outer side.
    right, left = profile[-1][::-1], profile[1]
    ys = [-y for y, _, _ in right] + [0.0] + [y for y, _, _ in left]
    zs = [z for _, z, _ in right] + [0.0] + [z for _, z, _ in left]
    mats = [m for _, _, m in right] + [m for _, _, m in left]
    return Road(
        np.array(ys), np.array(zs), np.array(mats, np.int16), edge, sidewalk, tuple(lanes), tuple(lines)
    )


def ground_mesh(road: Road, x_lo: float, x_hi: float, height: Callable[[np.ndarray], np.ndarray]) -> Mesh:
    """The road surface, curbs, sidewalks and terrain: the profile extruded along x every 2 m."""
    xs = np.arange(x_lo, x_hi + 2.0, 2.0)
    ny = len(road.profile_y)
    gx, gy = np.meshgrid(xs, road.profile_y, indexing="ij")
    gz = height(gx) + road.profile_z[None, :]
    verts = np.stack([gx, gy, gz], -1).reshape(-1, 3)
    idx = np.arange(len(xs) * ny).reshape(len(xs), ny)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    tris = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], axis=1).reshape(-1, 3)
    mats = np.broadcast_to(road.segment_materials[None, :], a.shape)
    mats = np.concatenate([mats, mats], axis=1).reshape(-1)
    return Mesh(verts, tris.astype(np.int64), mats.astype(np.int16))


def _slots(rng: np.random.Generator, x_lo: float, x_hi: float, spacing: tuple[float, float]) -> list[float]:
    xs, x = [], x_lo + rng.uniform(0, spacing[1])
    while x < x_hi:
        xs.append(x)
        x += rng.uniform(*spacing)
    return xs


def buildings(
    rng: np.random.Generator,
    road: Road,
    x_lo: float,
    x_hi: float,
    surface: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> list[Mesh]:
    """Facades, walls and yard trees along both sides, behind the sidewalks (road frame)."""
    meshes: list[Mesh] = []
    for side in (-1, 1):
        front0 = road.edge[side] + road.sidewalk[side]
        x = x_lo
        while x < x_hi:
            lot = rng.uniform(8.0, 30.0)
            kind = rng.choice(["building", "wall", "yard"], p=[0.6, 0.15, 0.25])
            xs = np.array([x, x + lot])
            if kind == "building":
                front = front0 + rng.uniform(0.0, 4.0)
                depth = rng.uniform(8.0, 20.0)
                height = rng.uniform(4.0, 24.0)
                base = float(surface(xs, np.full(2, side * front)).min()) - 0.8
                ys = sorted((side * front, side * (front + depth)))
                facade = str(rng.choice(FACADES))
                meshes.append(
                    box((x + 0.3, ys[0], base), (x + lot - 0.3, ys[1], base + 0.8 + height), facade)
                )
                if height > 10 and rng.random() < 0.4:
                    ys2 = sorted((side * (front + 3), side * (front + depth)))
                    extra = rng.uniform(3.0, 8.0)
                    meshes.append(
                        box(
                            (x + 1.5, ys2[0], base + height),
                            (x + lot - 1.5, ys2[1], base + height + extra),
                            facade,
                        )
                    )
            elif kind == "wall":
                h = rng.uniform(1.0, 2.3)
                base = float(surface(xs, np.full(2, side * front0)).min()) - 0.3
                ys = sorted((side * (front0 + 0.05), side * (front0 + 0.3)))
                meshes.append(
                    box((x, ys[0], base), (x + lot, ys[1], base + 0.3 + h), str(rng.choice(["wood", "curb"])))
                )
            else:
                for _ in range(rng.integers(0, 4)):
                    tx, ty = x + rng.uniform(2, lot - 2), side * (front0 + rng.uniform(2.0, 12.0))
                    tz = float(surface(np.array([tx]), np.array([ty]))[0])
                    meshes.append(
                        _actors.tree(rng).transform(yaw_transform(tx, ty, tz, rng.uniform(-np.pi, np.pi)))
                    )
            x += lot
    return meshes


def street_furniture(
    rng: np.random.Generator,
    road: Road,
    x_lo: float,
    x_hi: float,
    surface: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[list[Mesh], list[tuple]]:
    """Street lights, sidewalk trees and sign posts. Returns (unlabelled meshes, sign plates as
    (plate mesh in the plate's frame, road_from_plate (4, 4)))."""
    meshes: list[Mesh] = []
    plates: list[tuple] = []
    for side in (-1, 1):
        e = road.edge[side]
        taken: list[float] = []

        def free(x: float, gap: float = 2.0, taken: list[float] = taken) -> bool:
            return all(abs(x - t) > gap for t in taken)

        def at(x: float, dy: float, side: int = side, e: float = e) -> tuple[float, float, float]:
            y = side * (e + dy)
            return x, y, float(surface(np.array([x]), np.array([y]))[0])

        for x in _slots(rng, x_lo, x_hi, (25.0, 40.0)):
            taken.append(x)
            meshes.append(_actors.street_light(rng, -side).transform(yaw_transform(*at(x, 0.45), 0.0)))
        if road.sidewalk[side] >= 2.5 and rng.random() < 0.7:
            for x in _slots(rng, x_lo, x_hi, (8.0, 16.0)):
                if free(x):
                    taken.append(x)
                    meshes.append(
                        _actors.tree(rng).transform(yaw_transform(*at(x, 1.0), rng.uniform(-np.pi, np.pi)))
                    )
        for x in _slots(rng, x_lo, x_hi, (20.0, 70.0)):
            if not free(x):
                continue
            taken.append(x)
            yaw = np.pi if side < 0 else 0.0  # faces the traffic that drives towards it
            yaw += rng.uniform(-0.15, 0.15)
            post, plate = _actors.sign_post(rng)
            road_from_post = yaw_transform(*at(x, 0.45), yaw)
            meshes.append(post.transform(road_from_post))
            plate_c, _ = _actors.centred(plate)
            lo, hi = plate.bounds()
            centre = np.eye(4)
            centre[:3, 3] = (lo + hi) / 2
            plates.append((plate_c, road_from_post @ centre))
        for x in _slots(rng, x_lo, x_hi, (30.0, 90.0)):  # bins, hydrants: unlabelled clutter
            if free(x, 1.0):
                taken.append(x)
                x0, y0, z0 = at(x, 0.6)
                s = rng.uniform(0.3, 0.6)
                meshes.append(
                    box(
                        (x0 - s / 2, y0 - s / 2, z0 - 0.05),
                        (x0 + s / 2, y0 + s / 2, z0 + rng.uniform(0.6, 1.1)),
                        str(rng.choice(["paint_green", "paint_grey", "paint_red"])),
                    )
                )
    return meshes, plates


def fill_line(
    rng: np.random.Generator,
    x_lo: float,
    x_hi: float,
    make: Callable[[], tuple[float, object]],
    gap: tuple[float, float],
    skip: float = 0.0,
) -> list[tuple[float, object]]:
    """Objects along a line from x_lo to x_hi with random gaps between them: `make()` draws one
    object's (length, payload); returns (centre x, payload) pairs; `skip` leaves random holes."""
    out, x = [], x_lo + rng.uniform(0, gap[1])
    while True:
        length, payload = make()
        if x + length > x_hi:
            return out
        if rng.random() >= skip:
            out.append((x + length / 2, payload))
        x += length + rng.uniform(*gap)
