"""Team format: writer -> reader round trip, resuming, labels in sensor frames, validation, bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml

from drivetl.calib import load_rig, rig_from_dict, rig_to_dict
from drivetl.data.formats.team import TeamReader, TeamWriter, validate_team_folder
from drivetl.data.formats.team._example import example_record, write_example_team
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.errors import DataError, RigError

RIG = {
    "name": "test_rig",
    "ground": 0.0,
    "lidars": [
        {
            "name": "TOP",
            "model": "test 16-beam",
            "vehicle_from_sensor": {"translation": [1.0, 0.0, 1.8], "rpy_deg": [0.0, 1.0, 0.0]},
            "beams": {"count": 16, "min_deg": -15.0, "max_deg": 5.0},
            "columns": 360,
            "max_range": 60.0,
            "intensity": {"encoding": "uint8", "max": 255},
        }
    ],
    "cameras": [
        {
            "name": "FRONT",
            "width": 160,
            "height": 120,
            "intrinsics": {"fx": 100.0, "fy": 100.0, "cx": 80.0, "cy": 60.0},
            "vehicle_from_sensor": {"translation": [1.5, 0.0, 1.5], "rpy_deg": [0.0, 0.0, 0.0]},
        }
    ],
}


def make_rig(**top):
    d = json.loads(json.dumps(RIG))
    d.update(top)
    return rig_from_dict(d, "test rig")


def _png(w, h):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def test_round_trip(tmp_path):
    rig = make_rig()
    recs = [example_record(rig, FrameKey("seg_a", 100 + i), seed=i) for i in range(3)]
    with TeamWriter(tmp_path, rig) as w:
        for i, r in enumerate(recs):
            assert w.write(r, "train" if i < 2 else "val")
    reader = TeamReader(tmp_path)
    assert len(reader) == 3
    assert rig_to_dict(reader.rig) == rig_to_dict(rig)
    for rec in recs:
        back = reader[rec.key]
        lp, lb = rec.lidars["TOP"], back.lidars["TOP"]
        assert lb.frame == "sensor" and lb.columns == lp.columns
        np.testing.assert_array_equal(lb.points, lp.points)
        np.testing.assert_allclose(back.boxes.boxes, rec.boxes.boxes)
        assert back.boxes.classes == rec.boxes.classes and back.boxes.ids == rec.boxes.ids
        assert back.cameras["FRONT"].data == rec.cameras["FRONT"].data
    assert [r.key for r in reader.split("val")] == [recs[2].key]
    assert len(reader.split("train")) == 2
    assert validate_team_folder(tmp_path) == []


def test_resume_skips_complete_frames_and_keeps_splits(tmp_path):
    rig = make_rig()
    k0, k1 = FrameKey("s", 1), FrameKey("s", 2)
    with pytest.raises(KeyboardInterrupt), TeamWriter(tmp_path, rig) as w:
        w.write(example_record(rig, k0), "train")
        raise KeyboardInterrupt
    assert (tmp_path / "splits" / "train.txt").read_text() == "s/1\n"
    # A half-written frame: its LiDAR file exists but no frame file -> not complete.
    (tmp_path / "lidar" / "TOP" / "s").mkdir(parents=True, exist_ok=True)
    (tmp_path / "lidar" / "TOP" / "s" / "2.pcd").write_bytes(b"partial")
    with TeamWriter(tmp_path, rig) as w:
        assert w.has(k0) and not w.has(k1)
        assert w.write(example_record(rig, k0), "train") is False
        assert w.write(example_record(rig, k1), "train") is True
    assert (tmp_path / "splits" / "train.txt").read_text() == "s/1\ns/2\n"
    assert len(TeamReader(tmp_path)[k1].lidars["TOP"]) > 100
    assert not list(tmp_path.rglob("*.partial"))


def test_boxes_in_a_sensor_frame_and_class_mapping(tmp_path):
    rig = make_rig()
    write_example_team(tmp_path, rig, frames=1)
    frame = next((tmp_path / "frames").rglob("*.json"))
    doc = json.loads(frame.read_text())
    doc["labels"] = {
        "frame": "TOP",
        "objects": [
            {"class": "Car", "center": [10.0, 0.0, 0.0], "size": [4.0, 2.0, 1.5], "heading": 0.0},
            {"class": "Tree", "center": [5.0, 5.0, 0.0], "size": [1.0, 1.0, 5.0], "heading": 0.0},
        ],
    }
    frame.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"objects\[0\]\.class 'Car'.*format\.yaml"):
        TeamReader(tmp_path)[0]
    (tmp_path / "format.yaml").write_text(yaml.safe_dump({"classes": {"Car": "vehicle", "Tree": None}}))
    reader = TeamReader(tmp_path)
    boxes = reader[0].boxes
    assert boxes.classes == ("vehicle",) and reader.dropped == {"Tree": 1}
    m = rig.lidar("TOP").vehicle_from_lidar
    np.testing.assert_allclose(boxes.boxes[0, :3], m[:3, :3] @ [10.0, 0, 0] + m[:3, 3])
    assert abs(boxes.boxes[0, 6]) < 1e-9


def test_unknown_class_is_reported_by_validation(tmp_path):
    rig = make_rig()
    write_example_team(tmp_path, rig, frames=1)
    frame = next((tmp_path / "frames").rglob("*.json"))
    doc = json.loads(frame.read_text())
    doc["labels"]["objects"][0]["class"] = "Spaceship"
    frame.write_text(json.dumps(doc))
    issues = validate_team_folder(tmp_path)
    assert [i.severity for i in issues] == ["error"]
    assert "Spaceship" in issues[0].message and "format.yaml" in issues[0].fix


def test_image_size_disagreeing_with_intrinsics(tmp_path):
    rig = make_rig()
    rec = example_record(rig, FrameKey("s", 5))
    rec = FrameRecord(
        rec.key, rig, rec.lidars, {"FRONT": CameraImage("FRONT", _png(320, 240), "png")}, rec.boxes
    )
    with TeamWriter(tmp_path, rig) as w:
        w.write(rec)
    issues = validate_team_folder(tmp_path)
    assert len(issues) == 1 and issues[0].severity == "error"
    assert "FRONT" in issues[0].message and "320" in issues[0].message


def test_nan_points_name_the_file_and_nothing_is_half_written(tmp_path):
    rig = make_rig()
    pts = np.zeros((10, 4), np.float32)
    pts[3, 2] = np.nan
    rec = FrameRecord(FrameKey("s", 9), rig, {"TOP": LidarPoints("TOP", pts, frame="sensor")})
    with TeamWriter(tmp_path, rig) as w, pytest.raises(DataError, match=r"lidar/TOP/s/9\.pcd.*NaN"):
        w.write(rec)
    assert not (tmp_path / "frames" / "s" / "9.json").exists()
    assert not list(tmp_path.rglob("*.pcd"))


def test_unreadable_pcd_in_folder(tmp_path):
    rig = make_rig()
    write_example_team(tmp_path, rig, frames=1)
    pcd = next(tmp_path.rglob("*.pcd"))
    pcd.write_bytes(pcd.read_bytes()[:200])
    with pytest.raises(DataError, match=pcd.name):
        TeamReader(tmp_path)[0]
    issues = validate_team_folder(tmp_path)
    assert issues and issues[0].severity == "error" and pcd.name in issues[0].message


def test_rig_without_extrinsic(tmp_path):
    rig = make_rig()
    write_example_team(tmp_path, rig, frames=1)
    doc = yaml.safe_load((tmp_path / "rig.yaml").read_text())
    del doc["lidars"][0]["vehicle_from_sensor"]
    (tmp_path / "rig.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(RigError, match="vehicle_from_sensor"):
        TeamReader(tmp_path)
    issues = validate_team_folder(tmp_path)
    assert len(issues) == 1 and "vehicle_from_sensor" in issues[0].message


def test_sensor_missing_from_rig_and_split_without_frame(tmp_path):
    rig = make_rig()
    write_example_team(tmp_path, rig, frames=2)
    with open(tmp_path / "splits" / "train.txt", "a") as f:
        f.write("example/42\n")
    frame = sorted((tmp_path / "frames").rglob("*.json"))[0]
    doc = json.loads(frame.read_text())
    doc["lidars"]["SIDE"] = doc["lidars"]["TOP"]
    frame.write_text(json.dumps(doc))
    msgs = " | ".join(str(i) for i in validate_team_folder(tmp_path))
    assert "example/42" in msgs and "'SIDE' is not in rig.yaml" in msgs
    with pytest.raises(DataError, match="example/42"):
        TeamReader(tmp_path).split("train")


@pytest.mark.parametrize("fmt", [".bin", ".npz", ".npy"])
def test_other_lidar_formats(tmp_path, fmt):
    rig = make_rig()
    rec = example_record(rig, FrameKey("s", 3))
    with TeamWriter(tmp_path, rig, lidar_format=fmt) as w:
        w.write(rec)
    np.testing.assert_array_equal(TeamReader(tmp_path)[0].lidars["TOP"].points, rec.lidars["TOP"].points)


def test_bad_names_are_rejected(tmp_path):
    rig = make_rig()
    rec = FrameRecord(FrameKey("../evil", 1), rig, {}, {}, Boxes.empty())
    with TeamWriter(tmp_path, rig) as w, pytest.raises(DataError, match="segment"):
        w.write(rec)
    assert load_rig(tmp_path / "rig.yaml").name == "test_rig"
