"""KITTI: label conversion geometry (round trip), the real frame 000000, bad labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivetl.cli import main
from drivetl.data.canonicalize import points_in_boxes
from drivetl.data.formats.kitti import (
    KittiObject,
    boxes_from_kitti,
    import_kitti,
    kitti_from_boxes,
    read_kitti_labels,
    velo_from_rect,
)
from drivetl.data.formats.team import TeamReader
from drivetl.data.formats.team._layout import wrap_angle
from drivetl.errors import DataError

# Ideal KITTI-like calibration: rect camera (x right, y down, z fwd) 0.27 m ahead and 0.08 m below the
# Velodyne (x fwd, y left, z up).
IDEAL = {
    "R0_rect": np.eye(3),
    "Tr_velo_to_cam": np.array([[0.0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27]]),
}


def _objects(n: int, seed: int) -> list[KittiObject]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w, length = rng.uniform(1, 3), rng.uniform(0.5, 2.5), rng.uniform(0.5, 6)
        loc = (rng.uniform(-20, 20), rng.uniform(0.5, 2.5), rng.uniform(3, 60))
        out.append(
            KittiObject("Car", 0.0, 0, 0.0, (0, 0, 1, 1), (h, w, length), loc, rng.uniform(-math.pi, math.pi))
        )
    return out


def test_ideal_calibration_heading_and_centre():
    objs = _objects(50, 0)
    boxes, skipped = boxes_from_kitti(objs, velo_from_rect(IDEAL))
    assert skipped == {}
    for o, b in zip(objs, boxes.boxes, strict=True):
        h, w, length = o.dimensions
        x, y, z = o.location
        # camera -> velodyne: x_v = z_c + 0.27, y_v = -x_c, z_v = -(y_c - h/2) - 0.08
        np.testing.assert_allclose(b[:3], [z + 0.27, -x, -(y - h / 2) - 0.08], atol=1e-9)
        np.testing.assert_allclose(b[3:6], [length, w, h])
        assert b[6] == pytest.approx(float(wrap_angle(-o.rotation_y - math.pi / 2)), abs=1e-9)
        assert -math.pi < b[6] <= math.pi


def test_round_trip_ideal_and_real_calibration(real_data):
    from drivetl.calib.kitti import read_kitti_calib

    real = read_kitti_calib(real_data / "kitti_object" / "training" / "calib" / "000000.txt")
    for calib, tol in ((IDEAL, 1e-9), (real, 2e-3)):
        objs = _objects(30, 1)
        m = velo_from_rect(calib)
        back = kitti_from_boxes(boxes_from_kitti(objs, m)[0], m)
        want = np.array([[*o.dimensions, *o.location, o.rotation_y] for o in objs])
        np.testing.assert_allclose(back[:, :6], want[:, :6], atol=max(tol, 1e-9) * 50)
        np.testing.assert_allclose(wrap_angle(back[:, 6] - want[:, 6]), 0, atol=tol)


def test_box_heading_points_along_the_length():
    # A car 10 m ahead, rotation_y = 0 means its length runs along camera x = velodyne -y.
    obj = KittiObject("Car", 0, 0, 0, (0, 0, 1, 1), (1.5, 1.8, 4.0), (0.0, 1.7, 10.0), 0.0)
    boxes, _ = boxes_from_kitti([obj], velo_from_rect(IDEAL))
    assert boxes.boxes[0, 6] == pytest.approx(-math.pi / 2)
    pts = np.array([[10.27, -1.9, -0.8], [10.27, 1.9, -0.8], [11.2, 0.0, -0.8]])
    assert points_in_boxes(pts, boxes.boxes)[0].tolist() == [True, True, False]


def test_classes_skipped_and_unknown(tmp_path):
    label = tmp_path / "000001.txt"
    label.write_text(
        "Van 0 0 0 0 0 1 1 2.0 1.9 4.5 1 1.6 20 0.1\n"
        "DontCare -1 -1 -10 0 0 1 1 -1 -1 -1 -1000 -1000 -1000 -10\n"
        "Tram 0 0 0 0 0 1 1 3.5 2.5 15 5 1.6 40 0.1\n"
        "Person_sitting 0 0 0 0 0 1 1 1.2 0.6 0.8 -3 1.6 8 0.1\n"
    )
    boxes, skipped = boxes_from_kitti(read_kitti_labels(label), velo_from_rect(IDEAL), str(label))
    assert boxes.classes == ("vehicle", "pedestrian") and skipped == {"DontCare": 1, "Tram": 1}
    label.write_text("Zeppelin 0 0 0 0 0 1 1 2 2 2 0 1 10 0\n")
    with pytest.raises(DataError, match=r"000001\.txt.*Zeppelin"):
        boxes_from_kitti(read_kitti_labels(label), velo_from_rect(IDEAL), str(label))
    label.write_text("Car 0 0 0\n")
    with pytest.raises(DataError, match=r"000001\.txt:1: 4 fields"):
        read_kitti_labels(label)


@pytest.fixture(scope="module")
def kitti_team(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("kitti_team")
    assert main(["import", "kitti", str(real_data / "kitti_object"), str(out)]) == 0
    return out


def test_real_frame_imports_projects_and_boxes_hold_points(kitti_team, real_data, kitti_image_mask):
    reader = TeamReader(kitti_team)
    assert len(reader) == 1 and reader.split("train").keys == reader.keys
    rec = reader[0]
    pts = rec.lidars["velodyne"].points
    scan = np.fromfile(real_data / "kitti_object" / "training" / "velodyne" / "000000.bin", np.float32)
    np.testing.assert_array_equal(pts, scan.reshape(-1, 4))  # imported as recorded, in order
    cam = rec.rig.camera("camera_2")
    assert rec.cameras["camera_2"].size() == (cam.width, cam.height)
    uv, depth, ok = cam.project(pts[:, :3])
    np.testing.assert_array_equal(ok, kitti_image_mask)
    assert rec.boxes.classes == ("pedestrian",)
    inside = points_in_boxes(pts, rec.boxes.boxes).sum(axis=1)
    assert inside[0] > 100
    # The converted 3D box projects onto the label's 2D box.
    b = rec.boxes.boxes[0]
    corners = np.array(
        [[sx * b[3] / 2, sy * b[4] / 2, sz * b[5] / 2] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    )
    c, s = np.cos(b[6]), np.sin(b[6])
    world = corners @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + b[:3]
    uv, _, _ = cam.project(world)
    label = read_kitti_labels(real_data / "kitti_object" / "training" / "label_2" / "000000.txt")[0]
    np.testing.assert_allclose(
        [uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()], label.bbox, atol=25
    )


def test_reimport_is_resumable(kitti_team, real_data, capsys):
    before = {p: p.stat().st_mtime_ns for p in kitti_team.rglob("*") if p.is_file() and "frames" in p.parts}
    assert main(["import", "kitti", str(real_data / "kitti_object"), str(kitti_team)]) == 0
    assert "1 already present" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in kitti_team.rglob("*") if p.is_file() and "frames" in p.parts}
    assert before == after


def test_import_resumes_without_rewriting(real_data, tmp_path):
    out = tmp_path / "team"
    first = import_kitti(real_data / "kitti_object", out, split="train")
    assert first["frames"] == 1 and first["skipped_frames"] == 0 and first["boxes"] > 0
    frame_files = sorted(
        p for sub in ("frames", "lidar", "camera") for p in (out / sub).rglob("*") if p.is_file()
    )
    assert len(frame_files) == 3
    stamps = {p: p.stat().st_mtime_ns for p in frame_files}
    again = import_kitti(real_data / "kitti_object", out, split="train")
    assert again["frames"] == 0 and again["skipped_frames"] == 1 and again["boxes"] == 0
    assert {p: p.stat().st_mtime_ns for p in frame_files} == stamps  # no frame data rewritten
    assert TeamReader(out).split("train").keys == TeamReader(out).keys
