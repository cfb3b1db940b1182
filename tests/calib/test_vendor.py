"""Vendor calibration files -> beam tables and `drivetl rig from-vendor`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from drivetl.calib import load_rig
from drivetl.calib.vendor import read_vendor_table
from drivetl.cli import main
from drivetl.errors import RigError

ROOT = Path(__file__).resolve().parents[2]
VLP16_DEG = [-15, 1, -13, 3, -11, 5, -9, 7, -7, 9, -5, 11, -3, 13, -1, 15]


def test_real_hesai_table_into_fleet_rig_reproduces_its_beams(real_data, tmp_path, capsys):
    out = tmp_path / "rig.yaml"
    csv = real_data / "hesai_xt32" / "PandarXT32.csv"
    assert (
        main(
            [
                "rig",
                "from-vendor",
                str(csv),
                "--out",
                str(out),
                "--into",
                str(ROOT / "configs/rigs/fleet_xt32.yaml"),
            ]
        )
        == 0
    )
    got, want = load_rig(out).lidar("TOP"), load_rig(ROOT / "configs/rigs/fleet_xt32.yaml").lidar("TOP")
    np.testing.assert_allclose(got.inclinations, want.inclinations, atol=1e-12)
    np.testing.assert_allclose(got.azimuth_offsets, want.azimuth_offsets, atol=1e-12)
    np.testing.assert_array_equal(got.vehicle_from_lidar, want.vehicle_from_lidar)
    assert got.columns == want.columns and "32 beams" in capsys.readouterr().out


def test_velodyne_yaml_and_xml_give_the_same_sorted_table(tmp_path):
    lasers = [
        {
            "laser_id": i,
            "rot_correction": math.radians(0.1 * (i % 3)),
            "vert_correction": math.radians(d),
            "dist_correction": 0.0,
            "horiz_offset_correction": 0.0,
        }
        for i, d in enumerate(VLP16_DEG)
    ]
    import yaml

    (tmp_path / "VLP16.yaml").write_text(yaml.safe_dump({"lasers": lasers, "num_lasers": 16}))
    pts = "".join(
        f"<item><px><id_>{i}</id_><rotCorrection_>{0.1 * (i % 3)}</rotCorrection_>"
        f"<vertCorrection_>{d}</vertCorrection_></px></item>"
        for i, d in enumerate(VLP16_DEG)
    )
    enabled = "".join("<item>1</item>" for _ in VLP16_DEG)
    xml = (
        f'<?xml version="1.0"?><boost_serialization><DB><enabled_><count>16</count>{enabled}</enabled_>'
        f"<points_><count>16</count>{pts}</points_></DB></boost_serialization>"
    )
    (tmp_path / "db.xml").write_text(xml)
    a, b = read_vendor_table(tmp_path / "VLP16.yaml"), read_vendor_table(tmp_path / "db.xml")
    np.testing.assert_allclose(a.inclinations_deg, sorted(VLP16_DEG), atol=1e-9)
    np.testing.assert_allclose(a.inclinations_deg, b.inclinations_deg, atol=1e-9)
    np.testing.assert_allclose(a.azimuth_offsets_deg, b.azimuth_offsets_deg, atol=1e-9)
    order = np.argsort(VLP16_DEG)
    np.testing.assert_allclose(a.azimuth_offsets_deg, [0.1 * (i % 3) for i in order], atol=1e-9)


def test_ouster_metadata_gives_columns_and_lidar_to_sensor(tmp_path):
    alt = list(np.linspace(16.6, -16.6, 32))
    azi = [4.2 if i % 2 else -1.3 for i in range(32)]
    l2s = [-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 36.18, 0, 0, 0, 1]
    doc = {
        "beam_intrinsics": {"beam_altitude_angles": alt, "beam_azimuth_angles": azi},
        "lidar_intrinsics": {"lidar_to_sensor_transform": l2s},
        "config_params": {"lidar_mode": "1024x10"},
        "sensor_info": {"prod_line": "OS-1-32-U0"},
    }
    (tmp_path / "os1.json").write_text(json.dumps(doc))
    t = read_vendor_table(tmp_path / "os1.json")
    assert t.columns == 1024 and t.model == "Ouster OS-1-32-U0"
    assert t.lidar_to_sensor[2, 3] == pytest.approx(0.03618)
    np.testing.assert_allclose(t.inclinations_deg, alt[::-1])
    np.testing.assert_allclose(t.azimuth_offsets_deg, [-v for v in azi[::-1]])
    assert main(["rig", "from-vendor", str(tmp_path / "os1.json"), "--out", str(tmp_path / "r.yaml")]) == 0
    assert load_rig(tmp_path / "r.yaml").lidar("TOP").columns == 1024


def test_bad_vendor_files_name_the_file_and_row(tmp_path):
    (tmp_path / "bad.csv").write_text("Channel,Elevation,Azimuth\n1,2.0,0.1\n2,abc,0.2\n")
    with pytest.raises(RigError, match=r"bad.csv:3: expected 'channel, elevation, azimuth'"):
        read_vendor_table(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("Channel,Elevation,Azimuth\n1,2.0,0.1\n2,2.0,0.2\n")
    with pytest.raises(RigError, match="two beams share the elevation 2.0000"):
        read_vendor_table(tmp_path / "dup.csv")
    (tmp_path / "x.yaml").write_text("name: not velodyne\n")
    with pytest.raises(RigError, match="no 'lasers' list"):
        read_vendor_table(tmp_path / "x.yaml")
    (tmp_path / "e.xml").write_text('<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    with pytest.raises(RigError, match="DOCTYPE or entities is refused"):
        read_vendor_table(tmp_path / "e.xml")
    with pytest.raises(RigError, match="unknown calibration file type '.txt'"):
        read_vendor_table(tmp_path / "t.txt")
