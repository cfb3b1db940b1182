"""Procedural driving scenes from a seed: road, sidewalks, buildings, furniture, traffic, people.

A `Scene` is one stretch of street in the world frame, with every labelled actor's exact 3D box at
any time `t` (seconds from the start of the segment) and the ego vehicle's pose. Static geometry is
one triangle mesh (cast against once per frame by a reused ray-casting scene); moving actors are
meshes in their own frames, posed per time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from drivetl.sim import _actors, _layout
from drivetl.sim._mesh import Mesh, merge, yaw_transform
from drivetl.sim.materials import FACADES, MATERIALS, material_index
from drivetl.sim.regions import RegionStats, region_stats

__all__ = ["Actor", "Scene", "generate_scene"]

SCENE_HALF_LENGTH = 150.0


@dataclass(frozen=True, eq=False)
class Actor:
    """A labelled object. mesh: in the actor frame, centred on its box; size: (3,) length, width,
    height (metres); x, y, yaw: road-frame position and heading of the box centre at t = 0; speed:
    m/s along the heading; base: height of the box bottom above the ground surface."""

    id: str
    cls: str
    kind: str
    mesh: Mesh
    size: np.ndarray
    x: float
    y: float
    yaw: float
    speed: float = 0.0
    base: float = 0.0
    static: bool = False


@dataclass(frozen=True, eq=False)
class Scene:
    """One generated street (see the module docstring). world_from_road: (4, 4) float64."""

    seed: int
    region: str
    world_from_road: np.ndarray
    grade: float
    wave: tuple[float, float, float]
    road: _layout.Road
    static_mesh: Mesh
    static_actor: np.ndarray
    actors: tuple[Actor, ...]
    ego_y: float
    ego_speed: float
    sun: np.ndarray
    facade: tuple[float, float]

    # ------------------------------------------------------------------ geometry
    def height(self, x: np.ndarray) -> np.ndarray:
        """Ground height of the road centre line at road-frame x (metres)."""
        amp, length, phase = self.wave
        return self.grade * x + amp * np.sin(2 * np.pi * x / length + phase)

    def surface_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground surface height (road, curb, sidewalk, terrain) at road-frame (x, y)."""
        return self.height(np.asarray(x, float)) + np.interp(y, self.road.profile_y, self.road.profile_z)

    @property
    def dynamic(self) -> tuple[int, ...]:
        """Indices of the actors that are not part of the static mesh."""
        return tuple(i for i, a in enumerate(self.actors) if not a.static)

    @functools.cached_property
    def _motion(self) -> np.ndarray:
        """(K, 6) per actor: x, y, yaw, speed, base, height."""
        return np.array([(a.x, a.y, a.yaw, a.speed, a.base, a.size[2]) for a in self.actors]).reshape(-1, 6)

    def actor_poses(self, t: float, which: np.ndarray | None = None) -> np.ndarray:
        """(K, 4, 4) road_from_actor (box centre, heading) of the actors `which` (default all) at t (s)."""
        m = self._motion if which is None else self._motion[which]
        x = m[:, 0] + m[:, 3] * np.cos(m[:, 2]) * t
        y = m[:, 1] + m[:, 3] * np.sin(m[:, 2]) * t
        z = self.surface_z(x, y) + m[:, 4] + m[:, 5] / 2
        c, s = np.cos(m[:, 2]), np.sin(m[:, 2])
        poses = np.tile(np.eye(4), (len(m), 1, 1))
        poses[:, 0, 0], poses[:, 0, 1], poses[:, 1, 0], poses[:, 1, 1] = c, -s, s, c
        poses[:, 0, 3], poses[:, 1, 3], poses[:, 2, 3] = x, y, z
        return poses

    def road_from_actor(self, actor: Actor, t: float) -> np.ndarray:
        """(4, 4) pose of the actor's box centre in the road frame at time t (s)."""
        x = actor.x + actor.speed * np.cos(actor.yaw) * t
        y = actor.y + actor.speed * np.sin(actor.yaw) * t
        z = float(self.surface_z(np.array([x]), np.array([y]))[0]) + actor.base + actor.size[2] / 2
        return yaw_transform(x, y, z, actor.yaw)

    def world_from_vehicle(self, t: float, ground: float = 0.0) -> np.ndarray:
        """(4, 4) ego pose at time t; the vehicle frame's origin sits `-ground` above the road
        (ground = z of the ground plane in the vehicle frame, as a rig declares it)."""
        x = self.ego_speed * t
        z = float(self.surface_z(np.array([x]), np.array([self.ego_y]))[0]) - ground
        return self.world_from_road @ yaw_transform(x, self.ego_y, z, 0.0)

    def ego_poses(self, times: np.ndarray, ground: float = 0.0) -> np.ndarray:
        """(n, 4, 4) `world_from_vehicle` at each of the (n,) times (vectorized `world_from_vehicle`)."""
        times = np.asarray(times, float).reshape(-1)
        x = self.ego_speed * times
        road_from_vehicle = np.tile(np.eye(4), (len(times), 1, 1))
        road_from_vehicle[:, 0, 3] = x
        road_from_vehicle[:, 1, 3] = self.ego_y
        road_from_vehicle[:, 2, 3] = self.surface_z(x, np.full_like(x, self.ego_y)) - ground
        return self.world_from_road[None] @ road_from_vehicle

    def actor_boxes(self, t: float, vehicle_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All actors' boxes at time t in the vehicle frame: ((K, 7) x, y, z, l, w, h, heading;
        (K, 2) velocity x, y in m/s, in the vehicle frame)."""
        vehicle_from_road = vehicle_from_world @ self.world_from_road
        if not self.actors:
            return np.zeros((0, 7)), np.zeros((0, 2))
        m = vehicle_from_road[None] @ self.actor_poses(t)
        heading = np.arctan2(m[:, 1, 0], m[:, 0, 0])
        heading = np.where(heading <= -np.pi, heading + 2 * np.pi, heading)
        size = np.array([a.size for a in self.actors])
        boxes = np.concatenate([m[:, :3, 3], size, heading[:, None]], axis=1)
        mo = self._motion
        v_road = np.stack([mo[:, 3] * np.cos(mo[:, 2]), mo[:, 3] * np.sin(mo[:, 2]), np.zeros(len(mo))], 1)
        return boxes, (v_road @ vehicle_from_road[:3, :3].T)[:, :2]

    def decorate(
        self, points_world: np.ndarray, normals_world: np.ndarray, materials: np.ndarray
    ) -> np.ndarray:
        """Materials with lane markings painted on the asphalt and windows on facades.

        points_world, normals_world: (N, 3) hit points and surface normals; materials: (N,) int16.
        Returns a new (N,) int16 array.
        """
        out = materials.copy()
        road_from_world = np.linalg.inv(self.world_from_road).astype(points_world.dtype)
        rot, trans = road_from_world[:3, :3], road_from_world[:3, 3]

        def road(p: np.ndarray, row: int) -> np.ndarray:  # one road-frame coordinate of world points
            return p[:, 0] * rot[row, 0] + p[:, 1] * rot[row, 1] + p[:, 2] * rot[row, 2] + trans[row]

        asphalt = np.flatnonzero(materials == _ASPHALT)
        if asphalt.size:
            pa = np.take(points_world, asphalt, axis=0)
            x, y = road(pa, 0), road(pa, 1)
            for line_y, mat, dash, period in self.road.lines:
                on = np.abs(y - line_y) < 0.075
                if dash > 0:
                    on &= np.mod(x, period) < dash
                out[asphalt[on]] = mat
        facade = np.flatnonzero(np.take(_FACADE, materials))
        if facade.size:
            pf = np.take(points_world, facade, axis=0)
            x, y, z = road(pf, 0), road(pf, 1), road(pf, 2)
            n = np.take(normals_world, facade, axis=0)
            nx, ny, nz = (n[:, 0] * rot[k, 0] + n[:, 1] * rot[k, 1] + n[:, 2] * rot[k, 2] for k in range(3))
            storey, bay = self.facade
            z = z - self.height(x)
            along = np.where(np.abs(ny) > np.abs(nx), x, y)
            fz, fa = np.mod(z, storey) / storey, np.mod(along, bay) / bay
            window = (np.abs(nz) < 0.5) & (z > 1.0) & (fz > 0.3) & (fz < 0.8) & (fa > 0.2) & (fa < 0.8)
            out[facade[window]] = _WINDOW
        return out


_ASPHALT = material_index("asphalt")
_WINDOW = material_index("window")
#: Facade materials (a lookup by material id; the last entry answers -1).
_FACADE = np.zeros(len(MATERIALS) + 1, bool)
_FACADE[[material_index(m) for m in FACADES]] = True


# ---------------------------------------------------------------------- generation
def _vehicle_dims(
    rng: np.random.Generator, region: RegionStats, kinds: tuple[str, ...]
) -> tuple[str, np.ndarray]:
    p = np.array([region.vehicle_mix[k] for k in kinds])
    kind = str(rng.choice(kinds, p=p / p.sum()))
    dims = np.array(region.vehicle_size[kind]) * (
        1 + region.size_jitter * np.clip(rng.standard_normal(3), -2.5, 2.5)
    )
    return kind, dims


def _traffic(
    rng: np.random.Generator,
    region: RegionStats,
    road: _layout.Road,
    ego_y: float,
    ego_speed: float,
    x_lo: float,
    x_hi: float,
    density: float,
) -> list[Actor]:
    actors: list[Actor] = []
    counter = {"n": 0}

    def add(cls: str, kind: str, mesh_fn, x: float, y: float, yaw: float, speed: float, static: bool) -> None:
        mesh, size = _actors.centred(mesh_fn())
        counter["n"] += 1
        actors.append(
            Actor(f"{kind}-{counter['n']:04d}", cls, kind, mesh, size, x, y, yaw, speed, 0.0, static)
        )

    all_kinds = tuple(_actors.VEHICLE_KINDS)
    small = ("car", "suv", "pickup", "van")

    def vehicle_of(kinds: tuple[str, ...]):
        def make() -> tuple[float, tuple[str, np.ndarray]]:
            kind, dims = _vehicle_dims(rng, region, kinds)
            return float(dims[0]), (kind, dims)

        return make

    for lane in road.lanes:
        yaw = 0.0 if lane.direction > 0 else np.pi
        if lane.kind == "traffic":
            ego_lane = abs(lane.y - ego_y) < 1e-6
            speed = ego_speed if ego_lane else (0.0 if rng.random() < 0.1 else rng.uniform(3.0, 16.0))
            gap = (6.0 + 0.8 * speed, 14.0 + 2.5 * speed / density)
            spans = [(x_lo, x_hi)] if not ego_lane else [(x_lo, -3.0 - gap[0]), (3.0 + gap[0], x_hi)]
            for lo, hi in spans:
                for x, (kind, dims) in _layout.fill_line(rng, lo, hi, vehicle_of(all_kinds), gap, skip=0.2):
                    add(
                        "vehicle",
                        kind,
                        lambda k=kind, d=dims: _actors.vehicle(k, *d, rng),
                        x,
                        lane.y,
                        yaw,
                        speed,
                        False,
                    )
        elif lane.kind == "parking":
            skip = 0.35 * (1.3 - density)
            for x, (kind, dims) in _layout.fill_line(
                rng, x_lo, x_hi, vehicle_of(small), (0.8, 4.0), skip=skip
            ):
                y = lane.y + rng.uniform(-0.15, 0.15)
                add(
                    "vehicle",
                    kind,
                    lambda k=kind, d=dims: _actors.vehicle(k, *d, rng),
                    x,
                    y,
                    yaw + rng.uniform(-0.04, 0.04),
                    0.0,
                    True,
                )
        elif lane.kind == "bike":
            speed = rng.uniform(3.0, 7.0)
            for x, _ in _layout.fill_line(
                rng, x_lo, x_hi, lambda: (1.9, None), (8.0, 60.0 / density), skip=0.3
            ):
                add(
                    "cyclist",
                    "cyclist",
                    lambda: _actors.cyclist(rng),
                    x,
                    lane.y + rng.uniform(-0.2, 0.2),
                    yaw,
                    speed,
                    False,
                )
    for side in (-1, 1):  # pedestrians walk in two lines on each sidewalk
        e, sw = road.edge[side], road.sidewalk[side]
        for frac in (0.5, 0.8):
            y = side * (e + 1.2 + frac * max(sw - 1.6, 0.3))
            standing = rng.random() < 0.25
            speed = 0.0 if standing else rng.uniform(0.9, 1.6)
            direction = rng.choice([0.0, np.pi])
            for x, _ in _layout.fill_line(
                rng, x_lo, x_hi, lambda: (0.8, None), (2.0, 25.0 / density), skip=0.4
            ):
                h = region.pedestrian_height + 0.08 * np.clip(rng.standard_normal(), -2.5, 2.5)
                yaw = direction if not standing else rng.uniform(-np.pi, np.pi)
                add(
                    "pedestrian",
                    "pedestrian",
                    lambda hh=h: _actors.pedestrian(hh, rng),
                    x,
                    y,
                    yaw,
                    speed,
                    False,
                )
    return actors


def generate_scene(seed: int, region: str = "us", duration: float = 2.0) -> Scene:
    """A street scene from `seed` (int, or a sequence of ints for sub-streams) for `region`.

    duration: seconds the segment lasts; moving actors stay inside the generated stretch for it.
    """
    stats = region_stats(region)
    rng = np.random.default_rng(seed)
    world_from_road = yaw_transform(
        *rng.uniform(-500, 500, 2), rng.uniform(-20, 20), rng.uniform(-np.pi, np.pi)
    )
    grade = rng.uniform(-0.03, 0.03)
    wave = (rng.uniform(0.0, 1.5), rng.uniform(150.0, 400.0), rng.uniform(0, 2 * np.pi))
    road = _layout.road_layout(rng, stats)
    right_lanes = [ln for ln in road.lanes if ln.kind == "traffic" and ln.direction > 0]
    ego_y = right_lanes[int(rng.integers(len(right_lanes)))].y
    ego_speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(4.0, 15.0))
    density = float(rng.uniform(0.4, 1.0))
    x_lo, x_hi = -SCENE_HALF_LENGTH, SCENE_HALF_LENGTH + ego_speed * duration
    sun_el, sun_az = rng.uniform(0.4, 1.2), rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])

    scene = Scene(
        seed,
        region,
        world_from_road,
        grade,
        wave,
        road,
        Mesh.empty(),
        np.zeros(0, np.int32),
        (),
        ego_y,
        ego_speed,
        sun,
        (rng.uniform(3.0, 3.6), rng.uniform(2.5, 4.5)),
    )
    surface = scene.surface_z
    static = [_layout.ground_mesh(road, x_lo - 10, x_hi + 10, scene.height)]
    static += _layout.buildings(rng, road, x_lo, x_hi, surface)
    furniture, plates = _layout.street_furniture(rng, road, x_lo, x_hi, surface)
    static += furniture
    actors = _traffic(rng, stats, road, ego_y, ego_speed, x_lo + 10, x_hi - 10, density)
    for k, (plate, road_from_plate) in enumerate(plates):
        size = plate.bounds()[1] - plate.bounds()[0]
        x, y, z = road_from_plate[:3, 3]
        base = z - size[2] / 2 - float(surface(np.array([x]), np.array([y]))[0])
        yaw = float(np.arctan2(road_from_plate[1, 0], road_from_plate[0, 0]))
        actors.append(Actor(f"sign-{k:04d}", "sign", "sign", plate, size, x, y, yaw, 0.0, base, True))
    owners = [np.full(len(m.triangles), -1, np.int32) for m in static]
    for i, a in enumerate(actors):
        if a.static:
            static.append(a.mesh.transform(scene.road_from_actor(a, 0.0)))
            owners.append(np.full(len(a.mesh.triangles), i, np.int32))
    mesh = merge(static).transform(world_from_road)
    return replace(scene, static_mesh=mesh, static_actor=np.concatenate(owners), actors=tuple(actors))
