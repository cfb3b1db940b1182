"""LiDAR simulation: returns on surfaces, the range-image layout, intensity encodings, noise, sky."""

from __future__ import annotations

import dataclasses

import numpy as np

from drivetl.sim.frame import RigSimulator
from drivetl.sim.lidar import LidarNoise, LidarSimulator

from .conftest import small_rig, world_mesh_distance


def test_exact_returns_lie_on_the_surface_they_hit(scene, exact_frame):
    """Zero noise: every point (first and second returns, moving ego with per-column pose) lies on a
    surface of the scene posed at the frame's time, checked against an independent mesh distance."""
    t = 0.3
    world_from_vehicle = exact_frame.record.world_from_vehicle
    for name, scan in exact_frame.scans.items():
        p = scan.points[:, :3].astype(np.float64)
        world = p @ world_from_vehicle[:3, :3].T + world_from_vehicle[:3, 3]
        dist = world_mesh_distance(scene, t, world)
        assert len(dist) > 1000, name
        assert np.percentile(dist, 99.9) < 2e-3 and dist.max() < 1e-2, (name, dist.max())


def test_points_follow_the_range_image_and_pixel_pose(exact_frame, waymo_rig):
    """The points equal what Waymo's rule makes of the range image (+ pixel pose for TOP)."""
    from drivetl.data.formats.waymo import pixel_pose_matrices

    for lid in waymo_rig.lidars:
        scan = exact_frame.scans[lid.name]
        pose = None
        if scan.pixel_pose is not None:
            pose = pixel_pose_matrices(scan.pixel_pose)
        pts, _ = lid.range_image_to_points(
            scan.range_image[0, ..., 0], pose, exact_frame.record.world_from_vehicle
        )
        first = scan.points[scan.points[:, 5] == 0]
        np.testing.assert_allclose(first[:, :3], pts, atol=2e-3)
    assert exact_frame.scans["TOP"].pixel_pose is not None  # Waymo stores it for TOP only
    assert exact_frame.scans["FRONT"].pixel_pose is None


def test_ego_motion_changes_the_per_column_pose(scene, exact_frame):
    pose = exact_frame.scans["TOP"].pixel_pose
    travelled = np.linalg.norm(pose[0, -1, 3:] - pose[0, 0, 3:])
    assert abs(travelled - scene.ego_speed * 0.1 * (1 - 1 / pose.shape[1])) < 1e-3
    np.testing.assert_array_equal(pose[0], pose[-1])  # one pose per column


def test_no_return_on_the_sky_and_within_range(waymo_rig, caster):
    lid = dataclasses.replace(waymo_rig.lidar("TOP"), inclinations=np.radians([60.0, 75.0, 85.0]))
    scan = LidarSimulator(lid, LidarNoise().exact()).simulate(
        caster, 0.0, 0.0, np.random.default_rng(0), False
    )
    assert (scan.range_image[0, ..., 0] > 0).mean() < 0.1  # looking up: mostly sky (some trees, facades)
    top = LidarSimulator(waymo_rig.lidar("TOP"), LidarNoise()).simulate(
        caster, 0.0, 0.0, np.random.default_rng(0), False
    )
    r = top.range_image[..., 0]
    assert r[r > 0].max() <= waymo_rig.lidar("TOP").max_range + 0.2
    assert np.all(r[r <= 0] == -1)


def test_intensity_follows_the_rig_encoding(caster):
    """uint8 rigs get integer 0..255 raw intensity; Waymo-like float rigs unbounded floats; the
    retroreflective plates and signs are brighter than asphalt."""
    rig = small_rig("fleet_vlp16", columns=600)
    f = RigSimulator(rig, waymo_layout=False).render(caster, 0, segment="x", start_us=0)
    raw = f.scans["TOP"].points[:, 3]
    assert raw.max() <= 255 and np.all(raw == np.round(raw)) and raw.max() > 100
    canonical = rig.lidar("TOP").intensity.to_canonical(raw)
    assert 0.0 <= canonical.min() and canonical.max() <= 1.0


def test_range_noise_and_dropout_are_as_configured(waymo_rig, caster):
    lid = waymo_rig.lidar("TOP")
    exact = LidarSimulator(lid, LidarNoise().exact()).simulate(
        caster, 0.0, 0.0, np.random.default_rng(1), False
    )
    noisy = LidarSimulator(lid, LidarNoise(range_sigma=0.05, dropout=0.1, weak_return=0.0)).simulate(
        caster, 0.0, 0.0, np.random.default_rng(1), False
    )
    a, b = exact.range_image[0, ..., 0], noisy.range_image[0, ..., 0]
    both = (a > 0) & (b > 0) & (np.abs(a - b) < 0.5)  # the same surface (glass can pass or not)
    assert abs(np.std(a[both] - b[both]) - 0.05) < 0.01
    assert 0.06 < 1 - (b > 0).sum() / (a > 0).sum() < 0.16


def test_second_returns_come_from_edges_and_foliage(exact_frame):
    ri = exact_frame.scans["TOP"].range_image
    first, second = ri[0, ..., 0], ri[1, ..., 0]
    has2 = second > 0
    assert has2.sum() > 20
    assert np.all(second[has2] > first[has2])  # the second return lies behind the first
