"""Fixtures of the simulator tests: a small Waymo-like rig, one scene, rendered frames, an exact mesh."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from drivetl.calib import load_rig

RIGS = Path(__file__).resolve().parents[2] / "configs" / "rigs"


def small_rig(name: str = "waymo_like", columns: int = 500, camera_width: int = 160):
    """A shipped rig with fewer LiDAR columns and small cameras (fast to simulate)."""
    rig = load_rig(RIGS / f"{name}.yaml")
    lidars = tuple(dataclasses.replace(lid, columns=min(columns, lid.columns)) for lid in rig.lidars)
    cams = tuple(
        c.scaled(camera_width / c.width, round(camera_width * c.height / c.width) / c.height)
        for c in rig.cameras[:1]
    )
    return dataclasses.replace(rig, lidars=lidars, cameras=cams)


@pytest.fixture(scope="session")
def waymo_rig():
    rig = small_rig("waymo_like")
    return dataclasses.replace(rig, lidars=(rig.lidar("TOP"), rig.lidar("FRONT")))


@pytest.fixture(scope="session")
def scene():
    from drivetl.sim.scene import generate_scene

    return generate_scene(11, "us", duration=1.0)


@pytest.fixture(scope="session")
def caster(scene):
    from drivetl.sim._raycast import SceneCaster

    return SceneCaster(scene)


@pytest.fixture(scope="session")
def exact_frame(waymo_rig, caster):
    """Frame 3 (t = 0.3 s, the ego moving) rendered without noise, dropouts or weak-return losses."""
    from drivetl.sim.frame import RigSimulator
    from drivetl.sim.lidar import LidarNoise

    sim = RigSimulator(waymo_rig, waymo_layout=True, noise=LidarNoise().exact(), camera_noise=0.0)
    return sim.render(caster, 3, segment="test", start_us=0)


def world_mesh_distance(scene, t: float, points_world: np.ndarray) -> np.ndarray:
    """Unsigned distance (m) from (N, 3) world points to the scene's surfaces at time t, computed
    independently of the simulator's ray caster (one open3d scene with everything posed at t)."""
    import open3d as o3d

    verts = [scene.static_mesh.vertices]
    tris = [scene.static_mesh.triangles]
    n = len(verts[0])
    poses = scene.world_from_road[None] @ scene.actor_poses(t)
    for i in scene.dynamic:
        m = scene.actors[i].mesh.transform(poses[i])
        verts.append(m.vertices)
        tris.append(m.triangles + n)
        n += len(m.vertices)
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(
        o3d.core.Tensor(np.concatenate(verts).astype(np.float32)),
        o3d.core.Tensor(np.concatenate(tris).astype(np.uint32)),
    )
    return rc.compute_distance(o3d.core.Tensor(points_world.astype(np.float32))).numpy()
