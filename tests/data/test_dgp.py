"""TRI DGP scene import: calibration, boxes in the LiDAR frame, projection onto CAMERA_01, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from drivetl.calib.camera import OPTICAL_FROM_CAMERA
from drivetl.cli import main
from drivetl.data.canonicalize import canonicalize, estimate_ground, points_in_boxes
from drivetl.data.formats.dgp import DgpScene, import_dgp
from drivetl.data.formats.team import TeamReader
from drivetl.errors import DataError, RigError


@pytest.fixture(scope="module")
def dgp_team(real_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dgp_team")
    assert main(["import", "dgp", str(real_data / "tri_dgp_scene_01"), str(out)]) == 0
    return out


def _calibration(src):
    return json.loads(next((src / "calibration").glob("*.json")).read_text())


def test_import_keeps_calibration(dgp_team, real_data):
    reader = TeamReader(dgp_team)
    assert len(reader) == 1
    rec = reader[0]
    cal = _calibration(real_data / "tri_dgp_scene_01")
    i = cal["names"].index("CAMERA_01")
    cam = rec.rig.camera("CAMERA_01")
    intr = cal["intrinsics"][i]
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx((intr["fx"], intr["fy"], intr["cx"], intr["cy"]))
    assert (cam.width, cam.height) == (1936, 1216) == rec.cameras["CAMERA_01"].size()
    t = cal["extrinsics"][i]["translation"]
    np.testing.assert_allclose(cam.vehicle_from_camera[:3, 3], [t["x"], t["y"], t["z"]])
    # The optical axis (camera x) of CAMERA_01 looks forward along the vehicle's +x.
    assert cam.vehicle_from_camera[0, 0] > 0.99
    np.testing.assert_allclose(
        cam.vehicle_from_camera @ np.linalg.inv(OPTICAL_FROM_CAMERA) @ [0, 0, 1, 0],
        cam.vehicle_from_camera @ [1, 0, 0, 0],
    )
    assert rec.rig.ground == "estimate"
    assert rec.lidars["LIDAR"].points.shape == (40733, 4) and rec.lidars["LIDAR"].frame == "sensor"
    assert sorted(set(rec.boxes.classes)) == ["pedestrian", "vehicle"] and len(rec.boxes) == 95


def test_points_land_on_the_cars_in_camera_01(dgp_team):
    rec = TeamReader(dgp_team)[0]
    pts = rec.lidars["LIDAR"].points
    cam = rec.rig.camera("CAMERA_01")
    uv, depth, ok = cam.project(pts[:, :3])
    assert ok.sum() > 3000
    inside = points_in_boxes(pts, rec.boxes.boxes)
    checked = 0
    for i, b in enumerate(rec.boxes.boxes):
        if rec.boxes.classes[i] != "vehicle" or inside[i].sum() < 30:
            continue
        _, _, centre_ok = cam.project(b[None, :3])
        if not centre_ok[0]:
            continue
        # The car's own LiDAR points project into the image, inside its projected 3D box.
        corners = np.array(
            [
                [sx * b[3] / 2, sy * b[4] / 2, sz * b[5] / 2]
                for sx in (-1, 1)
                for sy in (-1, 1)
                for sz in (-1, 1)
            ]
        )
        c, s = np.cos(b[6]), np.sin(b[6])
        cuv, _, _ = cam.project(corners @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + b[:3])
        puv = uv[inside[i]][ok[inside[i]]]
        assert len(puv) >= 0.9 * inside[i].sum()
        lo, hi = cuv.min(axis=0) - 2, cuv.max(axis=0) + 2
        assert ((puv >= lo) & (puv <= hi)).all(axis=1).mean() > 0.95
        checked += 1
    assert checked >= 5
    # The nearest car ahead (about 10 m) is in the middle of the image.
    ahead = [i for i, b in enumerate(rec.boxes.boxes) if 5 < b[0] < 15 and abs(b[1]) < 1.5]
    cuv, _, cok = cam.project(rec.boxes.boxes[ahead, :3])
    assert cok.all() and np.all(np.abs(cuv[:, 0] - cam.cx) < 250)


def test_canonical_ground_is_estimated_near_zero(dgp_team):
    info: dict = {}
    sample = canonicalize(TeamReader(dgp_team)[0], report=info, decode_images=False)
    assert info["ground_source"] == "estimate"
    assert abs(estimate_ground(sample.points).height) < 0.05


def test_bad_quaternion_names_file_and_sensor(real_data, tmp_path):
    src = tmp_path / "scene"
    shutil.copytree(real_data / "tri_dgp_scene_01", src)
    path = next((src / "calibration").glob("*.json"))
    cal = json.loads(path.read_text())
    cal["extrinsics"][1]["rotation"]["qw"] = 3.0
    path.write_text(json.dumps(cal))
    out = tmp_path / "out"
    with pytest.raises(RigError, match=r"extrinsics\[1\] \(CAMERA_01\).*unit quaternion"):
        import_dgp(src, out)
    assert not (out / "frames").exists()
    del cal["extrinsics"][1]["rotation"]
    path.write_text(json.dumps(cal))
    with pytest.raises(RigError, match=r"extrinsics\[1\].*rotation"):
        import_dgp(src, out)


def test_unmapped_ontology_class(real_data):
    scene = DgpScene(real_data / "tri_dgp_scene_01", classes={"Car": "vehicle"})
    with pytest.raises(
        DataError, match=r"LIDAR/\d+\.json: annotations\[61\]: class 'Bus/RV/Caravan' has no mapping"
    ):
        scene.read(scene.samples()[0])


def test_scene_file_names_stay_inside_the_scene(real_data, tmp_path):
    src = tmp_path / "scene"
    shutil.copytree(real_data / "tri_dgp_scene_01", src)
    scene_json = next(p for p in src.rglob("scene*.json"))
    text = scene_json.read_text()
    doc = json.loads(text)
    datum = next(d for d in doc["data"] if "point_cloud" in d["datum"])
    original = datum["datum"]["point_cloud"]["filename"]
    outside = tmp_path / "outside.npz"
    shutil.copy(src / original, outside)
    datum["datum"]["point_cloud"]["filename"] = "../outside.npz"
    scene_json.write_text(json.dumps(doc))
    assert (src / "../outside.npz").resolve() == outside.resolve()  # the path would reach a real file
    with pytest.raises(DataError, match=r"point_cloud\.filename '\.\./outside\.npz' points outside"):
        import_dgp(src, tmp_path / "out")
