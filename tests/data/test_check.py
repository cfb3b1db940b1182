"""`drivetl check`: simulated fleet vs Waymo-like data, real KITTI, and each warning with its fix."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from drivetl.calib import load_rig, rig_from_dict, save_rig
from drivetl.cli import main
from drivetl.data.check import run_check
from drivetl.data.formats.team._example import write_example_team

ROOT = Path(__file__).resolve().parents[2]
SMALL_RIG = {
    "name": "small",
    "ground": 0.0,
    "lidars": [
        {
            "name": "TOP",
            "model": "test",
            "vehicle_from_sensor": {"translation": [1, 0, 1.8], "rpy_deg": [0, 0, 0]},
            "beams": {"count": 16, "min_deg": -15, "max_deg": 5},
            "columns": 720,
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
            "vehicle_from_sensor": {"translation": [1.5, 0, 1.5], "rpy_deg": [0, 0, 0]},
        }
    ],
}


def _rig_dict(**changes):
    d = json.loads(json.dumps(SMALL_RIG))
    for path, value in changes.items():
        node = d
        *head, last = path.split(".")
        for k in head:
            node = node[int(k)] if k.isdigit() else node[k]
        node[last] = value
    return d


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    root = tmp_path_factory.mktemp("sims")
    fleet = load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml")
    fleet = dataclasses.replace(fleet, lidars=(dataclasses.replace(fleet.lidars[0], columns=600),))
    waymo = load_rig(ROOT / "configs" / "rigs" / "waymo_like.yaml")
    waymo = dataclasses.replace(
        waymo, lidars=(dataclasses.replace(waymo.lidars[0], columns=600),), cameras=waymo.cameras[:1]
    )
    return write_example_team(root / "fleet", fleet, 1, seed=1), write_example_team(
        root / "waymo", waymo, 1, seed=2
    )


def test_fleet_against_waymo_like_flags_intensity_and_mounting(sims, tmp_path):
    fleet, waymo = sims
    result = run_check(fleet, tmp_path / "report", against=waymo)
    kinds = {i.where for i in result.issues}
    assert {"intensity", "mounting"} <= kinds
    assert not result.has_errors
    mounting = next(i for i in result.issues if i.where == "mounting")
    assert "pitch 2.0 vs 0.0" in mounting.message and mounting.fix
    for stats in (result.stats, result.source_stats):
        assert abs(np.median(stats.ground)) < 0.05
    text = result.report.read_text()
    for fig in ("overlay_FRONT.png", "bev.png", "histograms.png", "points_per_box.png", "box_sizes.png"):
        assert f"({fig})" in text and (tmp_path / "report" / fig).stat().st_size > 1000
    assert "Result: **OK**" in text


def _kitti_report(real_data, tmp_path, mask, *flags) -> str:
    team = tmp_path / "kitti"
    assert main(["import", "kitti", str(real_data / "kitti_object" / "training"), str(team)]) == 0
    assert main(["check", str(team), "--out", str(tmp_path / "r"), *flags]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    count = int(text.split("camera_2: ")[1].split()[0])
    assert count == int(mask.sum())  # the first frame's points that land in image_2
    return text


def test_real_kitti_report(real_data, tmp_path, kitti_image_mask):
    text = _kitti_report(real_data, tmp_path, kitti_image_mask, "--no-figures")
    assert "Result: **OK**" in text and not list((tmp_path / "r").glob("*.png"))


@pytest.mark.slow
def test_real_kitti_report_with_figures(real_data, tmp_path, kitti_image_mask):
    text = _kitti_report(real_data, tmp_path, kitti_image_mask)
    assert (
        "(overlay_camera_2.png)" in text and (tmp_path / "r" / "overlay_camera_2.png").stat().st_size > 10_000
    )


def _team(tmp_path, written_with: dict, declared: dict | None = None, ground_z=None) -> Path:
    root = write_example_team(
        tmp_path / "data", rig_from_dict(written_with, "t"), 1, seed=5, ground_z=ground_z
    )
    if declared is not None:
        save_rig(rig_from_dict(declared, "t"), root / "rig.yaml")
    return root


def _issues(root, tmp_path):
    result = run_check(root, tmp_path / "out", figures=False)
    assert result.report.is_file()
    return result


def test_clean_small_team_has_no_issues(tmp_path):
    result = _issues(_team(tmp_path, _rig_dict()), tmp_path)
    assert [str(i) for i in result.issues] == []


def test_ground_not_at_zero_is_an_error_with_the_fix(tmp_path, capsys):
    root = _team(tmp_path, _rig_dict(), _rig_dict(ground=-0.6))
    result = _issues(root, tmp_path)
    err = [i for i in result.issues if i.where.endswith("ground")]
    assert err and err[0].severity == "error" and "z = +0.60" in err[0].message
    assert "ground: 0.00" in err[0].fix
    assert main(["check", str(root), "--out", str(tmp_path / "cli"), "--no-figures"]) == 1
    assert "ground" in capsys.readouterr().out


def test_intensity_scale_mismatch(tmp_path):
    declared = _rig_dict(**{"lidars.0.intensity": {"encoding": "float", "max": 1.0}})
    result = _issues(_team(tmp_path, _rig_dict(), declared), tmp_path)
    err = [i for i in result.issues if "intensity" in i.where]
    assert err and err[0].severity == "error" and "exceed the declared max 1" in err[0].message


def test_image_size_disagrees_with_intrinsics(tmp_path):
    declared = _rig_dict(**{"cameras.0.width": 200})
    result = _issues(_team(tmp_path, _rig_dict(), declared), tmp_path)
    assert result.has_errors
    assert any("FRONT" in i.message and i.severity == "error" for i in result.issues)


def test_boxes_without_points_and_unknown_classes(tmp_path):
    root = _team(tmp_path, _rig_dict())
    frame = next((root / "frames").rglob("*.json"))
    doc = json.loads(frame.read_text())
    doc["labels"]["objects"].append(
        {"class": "vehicle", "center": [0, 55, 1], "size": [4, 2, 1.5], "heading": 0}
    )
    frame.write_text(json.dumps(doc))
    result = _issues(root, tmp_path)
    empty = [i for i in result.issues if i.where.endswith("boxes")]
    assert empty and empty[0].severity == "warning" and "hold no LiDAR points" in empty[0].message
    doc["labels"]["objects"][-1]["class"] = "Blimp"
    frame.write_text(json.dumps(doc))
    result = _issues(root, tmp_path)
    assert result.has_errors and any("Blimp" in i.message for i in result.issues)
    (root / "format.yaml").write_text(yaml.safe_dump({"classes": {"Blimp": None}}))
    result = _issues(root, tmp_path)
    assert not result.has_errors and any("Blimp x1" in i.message for i in result.issues)


def test_against_waymo_tfrecord(sims, tmp_path):
    pytest.importorskip("waymo_open_dataset")
    from drivetl.data.formats.waymo import WaymoWriter
    from drivetl.data.formats.waymo._synthetic import synthetic_frame

    path = tmp_path / "source.tfrecord"
    with WaymoWriter(path) as writer:
        record, range_images = synthetic_frame(0, top_shape=(64, 400), side_shape=(20, 100), returns=1)
        writer.write(record, range_images)
    result = run_check(sims[0], tmp_path / "out", against=path, figures=False)
    assert result.source_stats.frames == 1 and result.source_stats.rig.lidars[0].name == "TOP"
    assert any(i.where == "intensity" for i in result.issues)
