"""Frames: labels hold their objects' points, counts match the points, the camera sees the scene."""

from __future__ import annotations

import numpy as np

from drivetl.sim.frame import points_in_box

from .conftest import world_mesh_distance


def _all_points(frame) -> np.ndarray:
    return np.concatenate([s.points for s in frame.scans.values()])


def test_num_points_are_the_points_in_each_box(exact_frame):
    boxes = exact_frame.record.boxes
    pts = _all_points(exact_frame)
    assert len(boxes) >= 5
    for k in range(len(boxes)):
        assert boxes.num_points[k] == int(points_in_box(pts, boxes.boxes[k]).sum()) > 0


def test_labels_contain_the_points_of_their_objects(exact_frame, scene):
    """Every actor the LiDAR hit is labelled, and the points that hit it lie in its box."""
    boxes = exact_frame.record.boxes
    labelled = dict(zip(exact_frame.label_actors.tolist(), range(len(boxes)), strict=True))
    pts = _all_points(exact_frame)
    actor = np.concatenate([s.actor for s in exact_frame.scans.values()])
    hit = set(np.unique(actor[actor >= 0]).tolist())
    assert hit and hit <= set(labelled)
    for a in hit:
        inside = points_in_box(pts[actor == a], boxes.boxes[labelled[a]])
        assert inside.mean() > 0.99, scene.actors[a].id
        assert boxes.classes[labelled[a]] == scene.actors[a].cls
        assert boxes.ids[labelled[a]] == scene.actors[a].id


def test_label_fields(exact_frame, scene):
    b = exact_frame.record.boxes
    assert set(b.classes) <= {"vehicle", "pedestrian", "cyclist", "sign"}
    np.testing.assert_array_equal(b.difficulty, np.where(b.num_points <= 5, 2, 1))
    moving = [i for i, a in enumerate(exact_frame.label_actors) if scene.actors[a].speed > 0]
    speeds = np.linalg.norm(b.speed, axis=1)
    for i in moving:
        assert abs(speeds[i] - scene.actors[exact_frame.label_actors[i]].speed) < 1e-6


def test_camera_depth_lies_on_the_scene_and_image_decodes(exact_frame, waymo_rig, scene):
    cam = waymo_rig.cameras[0]
    img = exact_frame.images[cam.name]
    assert img.rgb.shape == (cam.height, cam.width, 3)
    decoded = exact_frame.record.cameras[cam.name].decode()
    assert decoded.shape == img.rgb.shape and np.abs(decoded.astype(int) - img.rgb).mean() < 6
    v, u = np.nonzero(np.isfinite(img.depth))
    assert len(u) > 0.5 * cam.width * cam.height  # street scenes: mostly not sky
    p = cam.unproject(np.stack([u + 0.5, v + 0.5], 1).astype(np.float64), img.depth[v, u].astype(np.float64))
    pose = exact_frame.record.world_from_vehicle
    dist = world_mesh_distance(scene, 0.3, np.asarray(p) @ pose[:3, :3].T + pose[:3, 3])
    assert np.percentile(dist, 99) < 0.01
    # sky pixels are at the top of the image, and bluish
    sky = ~np.isfinite(img.depth)
    if sky.any():
        rows = np.nonzero(sky)[0]
        assert rows.mean() < cam.height / 2
        assert img.rgb[sky][:, 2].mean() > img.rgb[sky][:, 0].mean()
