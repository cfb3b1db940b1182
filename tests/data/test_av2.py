"""Argoverse 2 logs: the real files import, cuboids hold their num_interior_pts, bad input is named."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from drivetl.cli import main
from drivetl.data.canonicalize import points_in_boxes
from drivetl.data.formats.av2 import AV2_CLASSES, import_av2
from drivetl.data.formats.team import TeamReader
from drivetl.errors import DataError

LOG = "adcf7d18-0510-35b0-a2fa-b4cea13a6d76"


def test_real_av2_log_imports_and_boxes_hold_their_interior_points(real_data, tmp_path, capsys):
    src, cal = real_data / "av2" / LOG, real_data / "av2" / "test_log" / "calibration"
    assert main(["import", "av2", str(src), str(tmp_path / "out"), "--calibration", str(cal)]) == 0
    printed = capsys.readouterr().out
    team = TeamReader(tmp_path / "out")
    assert len(team) == 1 and team.rig.lidar_names == ("up_lidar", "down_lidar")
    for lidar in team.rig.lidars:
        assert lidar.rows == 32
        assert np.degrees(lidar.inclinations).min() == pytest.approx(-25.0, abs=0.3)
    rec = team[0]
    pts = np.concatenate([lp.points[:, :3] for lp in rec.lidars.values()])
    assert len(pts) == 100_660 and rec.lidars["up_lidar"].frame == "vehicle"
    counts = points_in_boxes(pts, rec.boxes.boxes).sum(axis=1)
    want = rec.boxes.num_points
    ok = np.abs(counts - want) <= np.maximum(0.05 * want, 1)
    per_class = {
        c: (int(ok[[i for i, k in enumerate(rec.boxes.classes) if k == c]].sum()), n)
        for c, n in Counter(rec.boxes.classes).items()
    }
    print("num_interior_pts within 5% per class:", per_class)
    assert ok.all(), per_class
    assert set(rec.boxes.classes) == {"vehicle", "pedestrian", "sign"}
    assert "pedestrian: 16/16 boxes hold num_interior_pts within 5%" in printed
    assert not np.allclose(rec.world_from_vehicle, np.eye(4))


def test_av2_bad_input_names_the_file_and_row(real_data, tmp_path):
    src, cal = real_data / "av2" / LOG, real_data / "av2" / "test_log" / "calibration"
    log = tmp_path / "log"
    shutil.copytree(src, log)
    with pytest.raises(DataError, match=r"calibration/egovehicle_SE3_sensor.feather: not found"):
        import_av2(log, tmp_path / "o1")
    table = feather.read_table(log / "annotations.feather")
    cats = table.column("category").to_pylist()
    cats[5] = "SPACESHIP"
    bad = table.set_column(table.column_names.index("category"), "category", pa.array(cats))
    feather.write_feather(bad, log / "annotations.feather")
    with pytest.raises(DataError, match=r"annotations.feather: row 5 has unknown category 'SPACESHIP'"):
        import_av2(log, tmp_path / "o2", calibration=cal)
    assert not (tmp_path / "o2").exists()


def test_every_mapped_class_is_canonical():
    assert set(AV2_CLASSES.values()) <= {"vehicle", "pedestrian", "cyclist", "sign", None}
