"""`drivetl import bag` and `drivetl rig from-bag`: a simulated fleet_xt32 run written as ROS 1, ROS 2
(sqlite3, MCAP) and MCAP logs by rosbags' and mcap's writers imports back to the simulator's own frames."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from drivetl.cli import main
from drivetl.data.formats.bag import LogSelection, Topic, import_bag, rig_from_log, write_log
from drivetl.data.formats.team import TeamReader
from drivetl.errors import DataError

CASES = [  # container, raw images, file name
    ("ros1", False, "drive.bag"),
    ("ros2-sqlite3", True, "drive_sqlite3"),
    ("ros2-mcap", False, "drive_mcap"),
    ("mcap-ros1", False, "drive_ros1.mcap"),
    ("mcap-cdr", True, "drive_cdr.mcap"),
]


def selection(info: dict) -> LogSelection:
    cams = tuple(Topic(t, n) for n, t in info["camera_topics"].items())
    return LogSelection(Topic(info["lidar_topics"]["TOP"], "TOP"), cams)


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize(("container", "raw", "name"), CASES)
def test_log_imports_to_the_simulators_frames_and_rig(sim_team, tmp_path, container, raw, name):
    sim = TeamReader(sim_team)
    log = tmp_path / name
    info = write_log(log, sim.rig, list(sim), container=container, raw_images=raw, layout="hesai")
    segment = sim.keys[0].segment
    summary = import_bag(log, tmp_path / "team", selection(info), segment=segment)
    assert summary["frames"] == len(sim) == 2
    assert summary["dropped_images"] == summary["unpaired_frames"] == 0
    got = TeamReader(tmp_path / "team")
    assert got.keys == sim.keys
    lidar, want_lidar = got.rig.lidar("TOP"), sim.rig.lidar("TOP")
    np.testing.assert_allclose(lidar.vehicle_from_lidar, want_lidar.vehicle_from_lidar, atol=1e-9)
    np.testing.assert_allclose(np.degrees(lidar.inclinations), np.degrees(want_lidar.inclinations), atol=1e-4)
    assert lidar.columns == want_lidar.columns and lidar.intensity.kind == "uint8"
    cam, want_cam = got.rig.camera("FRONT"), sim.rig.camera("FRONT")
    np.testing.assert_allclose(cam.vehicle_from_camera, want_cam.vehicle_from_camera, atol=1e-9)
    for key in ("width", "height", "fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3"):
        assert getattr(cam, key) == getattr(want_cam, key), key
    for a, b in zip(got, sim, strict=True):
        pa, pb = a.lidars["TOP"], b.lidars["TOP"]
        assert pa.frame == "sensor" and pb.frame == "vehicle"
        m = lidar.vehicle_from_lidar
        xyz = pa.points[:, :3].astype(np.float64) @ m[:3, :3].T + m[:3, 3]
        assert len(xyz) == len(pb)
        np.testing.assert_allclose(xyz, pb.points[:, :3], atol=1e-5)
        np.testing.assert_array_equal(pa.column("intensity"), pb.column("intensity"))
        assert "laser_id" in pa.columns and "time" in pa.columns
        if raw:
            np.testing.assert_array_equal(decoded(a.cameras["FRONT"].data), decoded(b.cameras["FRONT"].data))
        else:
            assert a.cameras["FRONT"].data == b.cameras["FRONT"].data
        np.testing.assert_allclose(a.world_from_vehicle, b.world_from_vehicle, atol=1e-9)
        assert len(a.boxes) == 0  # logs carry no labels


def test_rig_from_bag_cli_reproduces_mounting_intrinsics_and_32_beams(sim_team, tmp_path, capsys):
    sim = TeamReader(sim_team)
    info = write_log(tmp_path / "drive.bag", sim.rig, list(sim), layout="velodyne")
    topics = ["--lidar-topic", f"{info['lidar_topics']['TOP']}=TOP"]
    topics += ["--camera-topic", f"{info['camera_topics']['FRONT']}=FRONT"]
    assert (
        main(["rig", "from-bag", str(tmp_path / "drive.bag"), "--out", str(tmp_path / "rig.yaml"), *topics])
        == 0
    )
    from drivetl.calib import load_rig

    rig = load_rig(tmp_path / "rig.yaml")
    want = sim.rig
    np.testing.assert_allclose(rig.lidars[0].vehicle_from_lidar, want.lidars[0].vehicle_from_lidar, atol=1e-9)
    assert rig.lidars[0].rows == 32
    np.testing.assert_allclose(
        np.degrees(rig.lidars[0].inclinations), np.degrees(want.lidars[0].inclinations), atol=1e-4
    )
    np.testing.assert_allclose(
        rig.cameras[0].vehicle_from_camera, want.cameras[0].vehicle_from_camera, atol=1e-9
    )
    assert (rig.cameras[0].fx, rig.cameras[0].cy, rig.cameras[0].k1) == (
        want.cameras[0].fx,
        want.cameras[0].cy,
        -0.3,
    )
    assert "32 beams" in capsys.readouterr().out


def test_import_resumes_and_reports_images_it_cannot_pair(sim_team, tmp_path, capsys):
    sim = TeamReader(sim_team)
    info = write_log(tmp_path / "drive.mcap", sim.rig, list(sim), container="mcap-cdr")
    args = [
        "import",
        "bag",
        str(tmp_path / "drive.mcap"),
        str(tmp_path / "out"),
        "--lidar-topic",
        f"{info['lidar_topics']['TOP']}=TOP",
        "--camera-topic",
        f"{info['camera_topics']['FRONT']}=FRONT",
    ]
    assert main(args) == 0
    frame = next((tmp_path / "out" / "frames").glob("*/*.json"))
    frame.unlink()  # an interrupted run: one frame incomplete
    assert main(args) == 0
    assert "imported 1 frames (1 already present)" in capsys.readouterr().out
    # A camera 0.2 s late never pairs within the default 0.05 s: frames are written without it.
    late = [r for r in sim]
    shifted = tmp_path / "late.bag"
    from dataclasses import replace

    from drivetl.data.records import FrameKey

    records = []
    for r in late:
        records.append(replace(r, cameras={}))
        k = FrameKey(r.key.segment, r.key.timestamp_us + 200_000 + 1)
        records.append(replace(r, key=k, lidars={}))
    write_log(shifted, sim.rig, records)
    s = import_bag(shifted, tmp_path / "late", selection(info), tolerance_s=0.05)
    assert s["frames"] == 2 and s["dropped_images"] == 2 and s["unpaired_frames"] == 2


def test_bad_logs_fail_with_one_line_naming_the_log(sim_team, tmp_path):
    sim = TeamReader(sim_team)
    info = write_log(tmp_path / "drive.bag", sim.rig, list(sim))
    with pytest.raises(
        DataError, match=r"drive.bag: topic /nope is absent.*PointCloud2 topics in the log: /top/points"
    ):
        import_bag(tmp_path / "drive.bag", tmp_path / "o1", LogSelection(Topic("/nope", "TOP")))
    sel = LogSelection(Topic(info["lidar_topics"]["TOP"], "TOP"), vehicle_frame="chassis")
    with pytest.raises(DataError, match=r"no tf path from 'top' to 'chassis'.*--vehicle-frame"):
        import_bag(tmp_path / "drive.bag", tmp_path / "o2", sel)
    assert not (tmp_path / "o2" / "frames").exists()
    cut = tmp_path / "cut.bag"
    cut.write_bytes((tmp_path / "drive.bag").read_bytes()[:5000])
    with pytest.raises(DataError, match=r"cut.bag: "):
        import_bag(cut, tmp_path / "o3", selection(info))
    with pytest.raises(DataError, match="unknown log type '.txt'"):
        rig_from_log(tmp_path / "x.txt", selection(info)) if (tmp_path / "x.txt").write_text(
            ""
        ) is not None else None


def test_real_sick_bag_imports_as_a_one_beam_lidar(real_data, tmp_path):
    bag = real_data / "bags" / "rms_1xxx_lms_1xx_movement_off.bag"
    sel = LogSelection(Topic("/cloud", "LMS1xx"), vehicle_frame="cloud")
    summary = import_bag(bag, tmp_path / "sick", sel)
    assert summary["frames"] == 89
    team = TeamReader(tmp_path / "sick")
    lidar = team.rig.lidar("LMS1xx")
    assert lidar.rows == 1 and abs(lidar.inclinations[0]) < 1e-6
    assert lidar.columns == 720  # 0.5 degree steps
    rec = team[0]
    pts = rec.lidars["LMS1xx"].points
    assert 0 < len(pts) <= 541 and np.isfinite(pts).all() and (pts[:, 2] == 0).all()
    doc = json.loads(next((tmp_path / "sick" / "frames").glob("*/*.json")).read_text())
    assert doc["lidars"]["LMS1xx"]["frame"] == "sensor"
    # The radar clouds have other field sets: one without intensity, read through --field.
    radar = LogSelection(
        Topic("/cloud_radar_rawtarget", "RADAR"), vehicle_frame="cloud", field_map={"intensity": "amplitude"}
    )
    s = import_bag(bag, tmp_path / "radar", radar)
    r = TeamReader(tmp_path / "radar")[0].lidars["RADAR"]
    assert s["frames"] > 0 and "vrad" in r.columns and r.column("intensity").any()
    shutil.rmtree(tmp_path / "radar")
