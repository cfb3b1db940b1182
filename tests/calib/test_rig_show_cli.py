"""`drivetl rig show`: a summary for the shipped rigs; one clear error and exit code 2 for a bad one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drivetl.cli import main

RIGS = Path(__file__).resolve().parents[2] / "configs" / "rigs"


@pytest.mark.parametrize("name", ["waymo_like", "fleet_xt32", "fleet_vlp16"])
def test_rig_show_prints_a_summary(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rig", "show", str(RIGS / f"{name}.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"rig {name}" in out and "LiDARs" in out and "Cameras" in out
    if name == "fleet_xt32":
        assert "Hesai PandarXT32" in out
        assert "0.0 2.0 0.0" in out  # roll pitch yaw of the 2 degree pitch
        assert "-16.02 .. 14.97" in out  # inclination range
        assert "2000 (0.180°)" in out and "uint8 max 255" in out
        assert "1920x1080" in out


def test_rig_show_malformed_rig_exits_2_with_one_line(tmp_path: Path) -> None:
    rig = yaml.safe_load((RIGS / "fleet_xt32.yaml").read_text())
    rig["lidars"][0]["vehicle_from_sensor"] = {
        "matrix": [[1, 0, 0, 1.2], [0, 0.93, 0, 0], [0, 0, 1, 1.9], [0, 0, 0, 1]]
    }
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig))
    out = subprocess.run(
        [sys.executable, "-m", "drivetl", "rig", "show", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"{path}: lidars[0].vehicle_from_sensor.matrix: rotation is not orthonormal (det=0.93" in lines[0]
    assert out.stdout == ""


def test_rig_show_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rig", "show", str(tmp_path / "none.yaml")]) == 2
    assert "no such rig file" in capsys.readouterr().err
