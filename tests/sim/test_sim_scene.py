"""Scene generation: determinism, exact boxes, plausible sizes, the region knob."""

from __future__ import annotations

import numpy as np
import pytest

from drivetl.data.records import CLASSES
from drivetl.errors import ConfigError
from drivetl.sim.scene import generate_scene


def test_same_seed_same_scene_and_other_seed_differs(scene):
    again = generate_scene(11, "us", duration=1.0)
    np.testing.assert_array_equal(again.static_mesh.vertices, scene.static_mesh.vertices)
    assert [a.id for a in again.actors] == [a.id for a in scene.actors]
    other = generate_scene(12, "us", duration=1.0)
    assert other.static_mesh.vertices.shape != scene.static_mesh.vertices.shape or not np.array_equal(
        other.static_mesh.vertices, scene.static_mesh.vertices
    )


def test_every_actor_mesh_fills_its_box_exactly(scene):
    """The box of each actor at any time is the tight bound of its posed mesh (vehicle frame)."""
    t = 0.7
    vehicle_from_world = np.linalg.inv(scene.world_from_vehicle(t))
    boxes, _ = scene.actor_boxes(t, vehicle_from_world)
    poses = vehicle_from_world @ scene.world_from_road @ scene.actor_poses(t)
    for a, box, pose in zip(scene.actors, boxes, poses, strict=True):
        v = a.mesh.transform(pose).vertices - box[:3]
        c, s = np.cos(box[6]), np.sin(box[6])
        local = np.stack([c * v[:, 0] + s * v[:, 1], -s * v[:, 0] + c * v[:, 1], v[:, 2]], 1)
        np.testing.assert_allclose(local.max(0), box[3:6] / 2, atol=1e-6, err_msg=a.id)
        np.testing.assert_allclose(local.min(0), -box[3:6] / 2, atol=1e-6, err_msg=a.id)
        assert -np.pi < box[6] <= np.pi


def test_classes_and_sizes_are_plausible(scene):
    classes = {a.cls for a in scene.actors}
    assert classes <= set(CLASSES) and {"vehicle", "pedestrian"} <= classes
    assert len({a.kind for a in scene.actors if a.cls == "vehicle"}) >= 3  # several shapes
    for a in scene.actors:
        length, width, height = a.size
        if a.cls == "vehicle":
            assert 3.3 < length < 15 and 1.5 < width < 2.9 and 1.2 < height < 4.2, (a.id, a.size)
        elif a.cls == "pedestrian":
            assert 1.4 < height < 2.1 and width < 1.0 and length < 1.0, (a.id, a.size)
        elif a.cls == "cyclist":
            assert 1.4 < length < 2.1 and 1.4 < height < 2.1, (a.id, a.size)
        # vehicles are several boxes and wheels, not one box
        if a.cls == "vehicle":
            assert len(a.mesh.triangles) > 100


def test_region_shifts_vehicle_sizes():
    def mean_length(region: str) -> float:
        lengths = [
            a.size[0]
            for seed in range(4)
            for a in generate_scene(seed, region).actors
            if a.kind in ("car", "suv")
        ]
        return float(np.mean(lengths))

    assert mean_length("us") > mean_length("eu") + 0.25


def test_unknown_region_is_a_clear_error():
    with pytest.raises(ConfigError, match="region 'mars'.*us, eu"):
        generate_scene(0, "mars")


def test_ego_pose_follows_the_road_surface(scene):
    poses = scene.ego_poses(np.array([0.0, 0.5]), ground=-0.3)
    for t, pose in zip((0.0, 0.5), poses, strict=True):
        np.testing.assert_allclose(pose, scene.world_from_vehicle(t, ground=-0.3))
    road_from_world = np.linalg.inv(scene.world_from_road)
    x, y, z = (road_from_world @ poses[1])[:3, 3]
    assert z == pytest.approx(float(scene.surface_z(np.array([x]), np.array([y]))[0]) + 0.3)
    assert x == pytest.approx(0.5 * scene.ego_speed)
