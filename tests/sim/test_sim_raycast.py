"""Ray casting: the moving actors are posed per time; helpers; the table-driven noise."""

from __future__ import annotations

import numpy as np
import pytest

from drivetl.sim._random import gaussian
from drivetl.sim._raycast import put_rows, rotate, transform


def test_caster_poses_the_moving_actors_at_each_time(caster, scene):
    """The rebuilt ray-casting scene holds the moving actors where the scene puts them at each time:
    a ray cast at a moving actor's centre from 30 m ahead of it along its heading hits it at t, and
    the hit moves with the actor."""
    from drivetl.sim._raycast import SceneCaster

    fresh = SceneCaster(scene, threads=1)
    moving = [i for i in scene.dynamic if scene.actors[i].speed > 2.0 and scene.actors[i].cls == "vehicle"]
    assert moving
    k = moving[0]
    hits_at = []
    for t in (0.0, 0.5):
        fresh.set_time(t)
        centre = (scene.world_from_road @ scene.road_from_actor(scene.actors[k], t))[:3, 3]
        heading = (scene.world_from_road @ scene.road_from_actor(scene.actors[k], t))[:3, 0]
        origin = centre + 30.0 * heading
        hits = fresh.cast(origin, -heading[None])
        assert hits.actor[0] == k, t
        hits_at.append(origin - hits.distance[0] * heading)
    travelled = np.linalg.norm(hits_at[1] - hits_at[0])
    assert travelled == pytest.approx(0.5 * scene.actors[k].speed, rel=0.01)  # (and the grade)


def test_rotate_transform_and_put_rows_match_numpy():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(50, 3))
    m = np.eye(4)
    m[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    m[:3, 3] = rng.normal(size=3)
    np.testing.assert_allclose(rotate(p, m[:3, :3]), p @ m[:3, :3].T, atol=1e-12)
    np.testing.assert_allclose(transform(m, p.astype(np.float32)), p @ m[:3, :3].T + m[:3, 3], atol=1e-5)
    dst, want = np.zeros((10, 4), np.float32), np.zeros((10, 4), np.float32)
    idx = np.array([7, 2, 5])
    rows = rng.normal(size=(3, 4)).astype(np.float32)
    put_rows(dst, idx, rows)
    want[idx] = rows
    np.testing.assert_array_equal(dst, want)


def test_table_gaussian_noise():
    a = gaussian(np.random.default_rng(1), 400_000, 0.5)
    assert a.dtype == np.float32 and a.shape == (400_000,)
    assert abs(a.mean()) < 0.005 and a.std() == pytest.approx(0.5, rel=0.01)
    assert abs((np.abs(a) < 0.5).mean() - 0.6827) < 0.003  # one sigma holds 68 %
    np.testing.assert_array_equal(a, gaussian(np.random.default_rng(1), 400_000, 0.5))
