"""Seeded Waymo-like LiDAR sweeps for kernel tests and benchmarks (no files, no simulator).

A 64-beam spinning LiDAR 2 m above flat ground (inclinations -17.6 deg to +2.4 deg, like Waymo's
top LiDAR): rays hit the ground (dense near the car), a ragged ring of walls and vegetation,
or car-sized boxes scattered around, with 2 cm range noise. Vehicle frame, metres, ground z = 0.
Points come in range-image order (beam by beam, each beam by azimuth), as a converted Waymo frame does.
"""

from __future__ import annotations

import math

import torch


def waymo_like_points(n: int = 180_000, seed: int = 0, *, sensor_height: float = 2.0) -> torch.Tensor:
    """One sweep: (n, 4) float32 columns x, y, z (metres, vehicle frame) and intensity in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    n_obj = n // 6
    n_scene = n - n_obj
    inc = torch.deg2rad(torch.linspace(-17.6, 2.4, 64, dtype=torch.float64))
    inc = inc[torch.randint(0, 64, (n_scene,), generator=g)]
    az = torch.rand(n_scene, generator=g, dtype=torch.float64) * 2 * math.pi
    dz, dxy = torch.sin(inc), torch.cos(inc)
    t_ground = torch.where(dz < 0, sensor_height / (-dz).clamp(min=1e-9), torch.full_like(dz, math.inf))
    # Walls/vegetation: a distance per azimuth sector, 8-80 m.
    sectors = 360
    wall = 8.0 + 72.0 * torch.rand(sectors, generator=g, dtype=torch.float64) ** 1.5
    t_wall = wall[(az / (2 * math.pi) * sectors).long().clamp(max=sectors - 1)] / dxy
    t = torch.minimum(t_ground, t_wall)
    t = t + 0.02 * torch.randn(n_scene, generator=g, dtype=torch.float64)
    scene = torch.stack([t * dxy * torch.cos(az), t * dxy * torch.sin(az), sensor_height + t * dz], dim=1)
    # Car-sized boxes, more points on nearer boxes (~1/r^2), points on their surfaces.
    n_boxes = 40
    r = 4.0 + 56.0 * torch.rand(n_boxes, generator=g, dtype=torch.float64)
    phi = torch.rand(n_boxes, generator=g, dtype=torch.float64) * 2 * math.pi
    centre = torch.stack([r * torch.cos(phi), r * torch.sin(phi), torch.full_like(r, 0.8)], dim=1)
    size = torch.tensor([4.5, 2.0, 1.6], dtype=torch.float64)
    which = torch.multinomial(1.0 / r**2, n_obj, replacement=True, generator=g)
    u = torch.rand(n_obj, 3, generator=g, dtype=torch.float64) - 0.5
    face = torch.randint(0, 3, (n_obj,), generator=g)
    u[torch.arange(n_obj), face] = torch.sign(u[torch.arange(n_obj), face]) * 0.5
    objects = centre[which] + u * size
    xyz = torch.cat([scene, objects])
    # Range-image order: beam row (nearest inclination of the ray), then azimuth column.
    rel = xyz - torch.tensor([0.0, 0.0, sensor_height], dtype=torch.float64)
    elevation = torch.atan2(rel[:, 2], torch.hypot(rel[:, 0], rel[:, 1]))
    row = torch.bucketize(elevation, torch.deg2rad(torch.linspace(-17.6, 2.4, 64, dtype=torch.float64)))
    column = ((torch.atan2(rel[:, 1], rel[:, 0]) + math.pi) / (2 * math.pi) * 2650).long().clamp(max=2649)
    xyz = xyz[torch.argsort(row * 2650 + column, stable=True)]
    intensity = torch.rand(n, 1, generator=g, dtype=torch.float64)
    return torch.cat([xyz, intensity], dim=1).to(torch.float32)


def waymo_like_batch(frames: int, n: int = 180_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`frames` sweeps concatenated: points (frames * n, 4) float32 and offsets (frames + 1,) int64."""
    points = torch.cat([waymo_like_points(n, seed + i) for i in range(frames)])
    offsets = torch.arange(frames + 1, dtype=torch.int64) * n
    return points, offsets
