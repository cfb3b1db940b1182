"""rig.yaml: the shipped rigs load, save/load round trips, and every validation error names file and key."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from drivetl.calib import (
    SensorRig,
    load_rig,
    rig_from_dict,
    rig_to_dict,
    rotation_from_quaternion_wxyz,
    rotation_from_rpy,
    save_rig,
)
from drivetl.errors import RigError

RIGS = Path(__file__).resolve().parents[2] / "configs" / "rigs"

BASE = {
    "name": "test_rig",
    "ground": 0.0,
    "lidars": [
        {
            "name": "TOP",
            "model": "Hesai PandarXT32",
            "vehicle_from_sensor": {"translation": [1.2, 0.0, 1.9], "rpy_deg": [0.0, 2.0, 0.0]},
            "beams": {"inclinations_deg": [5.0, 1.0, -3.0, -9.0]},
            "azimuth_offsets_deg": [0.1, 0.2, 0.3, 0.4],
            "columns": 2000,
            "max_range": 120.0,
            "min_range": 0.5,
            "intensity": {"encoding": "uint8", "max": 255},
            "returns": 1,
        }
    ],
    "cameras": [
        {
            "name": "FRONT",
            "width": 1920,
            "height": 1080,
            "intrinsics": {"fx": 1000.0, "fy": 1000.0, "cx": 960.0, "cy": 540.0},
            "distortion": {"k1": -0.3, "k2": 0.1},
            "vehicle_from_sensor": {"translation": [1.5, 0.0, 1.5], "quaternion_xyzw": [0.0, 0.0, 0.0, 1.0]},
            "rolling_shutter": {"direction": "LEFT_TO_RIGHT", "readout_s": 0.03},
        }
    ],
}


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_rigs_load() -> None:
    waymo = load_rig(RIGS / "waymo_like.yaml")
    assert waymo.lidar_names == ("TOP", "FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR")
    assert waymo.camera_names == ("FRONT", "FRONT_LEFT", "FRONT_RIGHT", "SIDE_LEFT", "SIDE_RIGHT")
    top = waymo.lidar("TOP")
    assert (top.rows, top.columns, top.max_range, top.returns) == (64, 2650, 75.0, 2)
    assert math.degrees(top.inclinations[0]) == pytest.approx(-17.6, abs=0.05)
    assert math.degrees(top.inclinations[-1]) == pytest.approx(2.4, abs=0.05)
    assert top.intensity.transform == "tanh"
    for name in ("FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR"):
        assert (waymo.lidar(name).rows, waymo.lidar(name).columns) == (200, 600)
    assert (waymo.camera("FRONT").width, waymo.camera("FRONT").height) == (1920, 1280)
    assert (waymo.camera("SIDE_LEFT").width, waymo.camera("SIDE_LEFT").height) == (1920, 886)

    xt32 = load_rig(RIGS / "fleet_xt32.yaml")
    lidar = xt32.lidar("TOP")
    assert lidar.rows == 32 and lidar.columns == 2000 and lidar.intensity.kind == "uint8"
    assert lidar.vehicle_from_lidar[2, 3] == pytest.approx(1.9)
    assert (lidar.vehicle_from_lidar[:3, :3] @ [1, 0, 0])[2] < 0  # pitched nose down
    assert xt32.camera("FRONT").fov_deg()[0] > 100

    vlp16 = load_rig(RIGS / "fleet_vlp16.yaml")
    np.testing.assert_allclose(np.degrees(vlp16.lidar("TOP").inclinations), np.arange(-15, 16, 2))


def test_xt32_beams_match_the_vendor_channel_table(real_data: Path) -> None:
    lines = (real_data / "hesai_xt32" / "PandarXT32.csv").read_text().splitlines()[1:]
    table = np.array([[float(v) for v in line.split(",")] for line in lines if line.strip()])
    lidar = load_rig(RIGS / "fleet_xt32.yaml").lidar("TOP")
    order = np.argsort(table[:, 1])
    np.testing.assert_allclose(np.degrees(lidar.inclinations), table[order, 1], atol=1e-9)
    # the vendor's azimuth is clockwise; drivetl's counter-clockwise
    np.testing.assert_allclose(np.degrees(lidar.azimuth_offsets), -table[order, 2], atol=1e-9)


@pytest.mark.parametrize("name", ["waymo_like", "fleet_xt32", "fleet_vlp16", None])
def test_save_load_round_trip(tmp_path: Path, name: str | None) -> None:
    rig = load_rig(RIGS / f"{name}.yaml") if name else rig_from_dict(BASE, "base")
    out = tmp_path / "saved" / "rig.yaml"
    save_rig(rig, out)
    again = load_rig(out)
    assert again.name == rig.name and again.ground == rig.ground
    assert [l.name for l in again.lidars] == [l.name for l in rig.lidars]
    for a, b in zip(rig.lidars, again.lidars, strict=True):
        np.testing.assert_allclose(b.vehicle_from_lidar, a.vehicle_from_lidar, atol=1e-12)
        np.testing.assert_allclose(b.inclinations, a.inclinations, atol=1e-12)
        assert (b.azimuth_offsets is None) == (a.azimuth_offsets is None)
        if a.azimuth_offsets is not None:
            np.testing.assert_allclose(b.azimuth_offsets, a.azimuth_offsets, atol=1e-12)
        assert (b.columns, b.max_range, b.min_range, b.returns, b.model) == (
            a.columns,
            a.max_range,
            a.min_range,
            a.returns,
            a.model,
        )
        assert b.intensity == a.intensity
    for a, b in zip(rig.cameras, again.cameras, strict=True):
        np.testing.assert_allclose(b.vehicle_from_camera, a.vehicle_from_camera, atol=1e-12)
        assert (b.width, b.height, b.fx, b.fy, b.cx, b.cy, b.distortion) == (
            a.width,
            a.height,
            a.fx,
            a.fy,
            a.cx,
            a.cy,
            a.distortion,
        )
        assert (b.rolling_shutter_direction, b.readout_time_s) == (
            a.rolling_shutter_direction,
            a.readout_time_s,
        )
    # a second save gives the same text: the file format is stable
    save_rig(again, tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == out.read_text()
    assert not list(out.parent.glob("*.partial"))


def test_rotation_spellings_agree() -> None:
    rpy = [math.radians(a) for a in (1.0, 2.0, 30.0)]
    rot = rotation_from_rpy(*rpy)
    from drivetl.calib import quaternion_wxyz_from_rotation

    q = quaternion_wxyz_from_rotation(rot)
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = [1.0, 2.0, 3.0]
    spellings = [
        {"translation": [1.0, 2.0, 3.0], "rpy_deg": [1.0, 2.0, 30.0]},
        {"translation": [1.0, 2.0, 3.0], "quaternion_wxyz": q.tolist()},
        {"translation": [1.0, 2.0, 3.0], "quaternion_xyzw": [*q[1:].tolist(), float(q[0])]},
        {"matrix": m.tolist()},
    ]
    for spelling in spellings:
        data = copy.deepcopy(BASE)
        data["lidars"][0]["vehicle_from_sensor"] = spelling
        np.testing.assert_allclose(
            rig_from_dict(data, "r.yaml").lidar("TOP").vehicle_from_lidar, m, atol=1e-12
        )
    np.testing.assert_allclose(rotation_from_quaternion_wxyz(q), rot, atol=1e-12)


def test_beam_spellings_and_column_spellings() -> None:
    data = copy.deepcopy(BASE)
    lidar = rig_from_dict(data, "r.yaml").lidar("TOP")
    np.testing.assert_allclose(np.degrees(lidar.inclinations), [-9.0, -3.0, 1.0, 5.0])
    np.testing.assert_allclose(
        np.degrees(lidar.azimuth_offsets), [0.4, 0.3, 0.2, 0.1]
    )  # reordered with beams
    data["lidars"][0]["beams"] = {"count": 64, "min_deg": -17.6, "max_deg": 2.4}
    del data["lidars"][0]["azimuth_offsets_deg"]
    del data["lidars"][0]["columns"]
    data["lidars"][0]["azimuth_resolution_deg"] = 0.18
    lidar = rig_from_dict(data, "r.yaml").lidar("TOP")
    assert lidar.rows == 64 and lidar.columns == 2000
    assert math.degrees(lidar.inclinations[0]) == pytest.approx(-17.6 + 20.0 / 128)


def _broken(edit) -> dict:
    data = copy.deepcopy(BASE)
    edit(data)
    return data


BROKEN = {
    "non_orthonormal": (
        lambda d: d["lidars"][0].update(
            vehicle_from_sensor={"matrix": [[1, 0, 0, 0], [0, 0.93, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}
        ),
        r"rig\.yaml: lidars\[0\]\.vehicle_from_sensor\.matrix: rotation is not orthonormal \(det=0\.93",
    ),
    "missing_extrinsic": (
        lambda d: d["cameras"][0].pop("vehicle_from_sensor"),
        r"rig\.yaml: cameras\[0\]: missing required key 'vehicle_from_sensor'",
    ),
    "unsorted_beams": (
        lambda d: d["lidars"][0]["beams"].update(inclinations_deg=[5.0, 1.0, 2.0, -9.0]),
        r"beams\.inclinations_deg: must be strictly ascending or strictly descending; entry 2",
    ),
    "repeated_beam": (
        lambda d: d["lidars"][0]["beams"].update(inclinations_deg=[5.0, 1.0, 1.0, -9.0]),
        r"lidars\[0\]\.beams\.inclinations_deg: .* repeats a beam",
    ),
    "beam_not_a_number": (
        lambda d: d["lidars"][0]["beams"].update(inclinations_deg=[5.0, "one", 1.0, -9.0]),
        r"lidars\[0\]\.beams\.inclinations_deg\[1\]: expected a number, got 'one'",
    ),
    "offsets_length": (
        lambda d: d["lidars"][0].update(azimuth_offsets_deg=[0.1]),
        r"lidars\[0\]\.azimuth_offsets_deg: 1 values for 4 beams",
    ),
    "quaternion_norm": (
        lambda d: d["cameras"][0]["vehicle_from_sensor"].update(quaternion_xyzw=[0.0, 0.0, 0.5, 0.5]),
        r"cameras\[0\]\.vehicle_from_sensor\.quaternion_xyzw: quaternion norm is 0\.7071",
    ),
    "two_rotations": (
        lambda d: d["cameras"][0]["vehicle_from_sensor"].update(rpy_deg=[0, 0, 0]),
        r"cameras\[0\]\.vehicle_from_sensor: give exactly one of",
    ),
    "typo_key": (
        lambda d: d["lidars"][0].update(colums=10),
        r"lidars\[0\]: unknown key 'colums'",
    ),
    "bad_intensity": (
        lambda d: d["lidars"][0].update(intensity={"encoding": "uint8", "max": 4095}),
        r"lidars\[0\]\.intensity: intensity max 4095 does not fit uint8",
    ),
    "bad_resolution": (
        lambda d: d["lidars"][0].update(azimuth_resolution_deg=0.17),
        r"lidars\[0\]: give exactly one of 'columns' or 'azimuth_resolution_deg'",
    ),
    "negative_focal": (
        lambda d: d["cameras"][0]["intrinsics"].update(fx=-5.0),
        r"cameras\[0\]\.intrinsics\.fx: focal length must be positive",
    ),
    "duplicate_sensor": (
        lambda d: d["cameras"].append(copy.deepcopy(d["cameras"][0])),
        r"rig\.yaml: cameras\[1\]\.name: sensor name 'FRONT' is used twice",
    ),
    "bad_shutter": (
        lambda d: d["cameras"][0]["rolling_shutter"].update(direction="DIAGONAL"),
        r"cameras\[0\]: camera FRONT: rolling shutter direction 'DIAGONAL'",
    ),
    "no_sensors": (lambda d: (d.pop("lidars"), d.pop("cameras")), r"rig\.yaml: the rig lists no sensors"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validation_errors_name_file_and_key(tmp_path: Path, case: str) -> None:
    edit, pattern = BROKEN[case]
    path = _write(tmp_path, _broken(edit))
    with pytest.raises(RigError) as info:
        load_rig(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert __import__("re").search(pattern, message), message


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RigError, match="no such rig file"):
        load_rig(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlidars: [\n")
    with pytest.raises(RigError, match=r"bad\.yaml: not valid YAML at line"):
        load_rig(bad)
    bad.write_text("")
    with pytest.raises(RigError, match="empty"):
        load_rig(bad)


def test_sensor_lookup_names_known_sensors() -> None:
    rig = rig_from_dict(BASE, "rig.yaml")
    assert isinstance(rig, SensorRig) and rig.source_path == "rig.yaml"
    with pytest.raises(RigError, match=r"rig\.yaml: no camera named 'BACK' \(known: FRONT\)"):
        rig.camera("BACK")
    with pytest.raises(RigError, match=r"no lidar named 'FRONT' \(known: TOP\)"):
        rig.lidar("FRONT")
    assert rig_to_dict(rig)["lidars"][0]["beams"]["inclinations_deg"][0] == pytest.approx(-9.0)
    assert rig_from_dict({**BASE, "ground": "estimate"}, "r").ground == "estimate"


def test_rigs_pickle_for_data_loader_workers() -> None:
    import pickle

    rig = load_rig(RIGS / "fleet_xt32.yaml")
    camera = rig.camera("FRONT")
    _ = camera.optical_from_vehicle  # a cached property travels along
    again = pickle.loads(pickle.dumps(rig))
    np.testing.assert_array_equal(again.camera("FRONT").optical_from_vehicle, camera.optical_from_vehicle)
    np.testing.assert_array_equal(again.lidar("TOP").inclinations, rig.lidar("TOP").inclinations)
