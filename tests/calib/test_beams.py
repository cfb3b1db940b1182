"""Beam-pattern estimation from scans, and `drivetl rig beams`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from drivetl.calib.beams import beam_spacing, estimate_beams, nearest_beam
from drivetl.cli import main
from drivetl.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def _scan(inclinations_deg, n_per_beam=800, noise_deg=0.0, outliers=0.0, seed=0):
    rng = np.random.default_rng(seed)
    inc = np.repeat(np.radians(inclinations_deg), n_per_beam) + rng.normal(
        0, np.radians(noise_deg) + 1e-12, len(inclinations_deg) * n_per_beam
    )
    if outliers:
        k = int(outliers * inc.size)
        inc[rng.choice(inc.size, k, replace=False)] = rng.uniform(inc.min(), inc.max(), k)
    az = rng.uniform(-np.pi, np.pi, inc.size)
    r = rng.uniform(2, 50, inc.size)
    return np.c_[r * np.cos(inc) * np.cos(az), r * np.cos(inc) * np.sin(az), r * np.sin(inc)]


def _csv(real_data):
    table = np.loadtxt(real_data / "hesai_xt32" / "PandarXT32.csv", delimiter=",", skiprows=1)
    return np.sort(table[:, 1])


def test_hesai_xt32_scan_gives_32_beams_matching_the_vendor_table(real_data):
    from drivetl.data.formats.pointfile import read_points

    pts, _ = read_points(real_data / "hesai_xt32" / "1673400678101968885.pcd")
    pattern = estimate_beams([pts])
    assert pattern.count == 32
    enough = pattern.counts >= 200
    assert enough.sum() >= 30
    err = np.abs(pattern.inclinations_deg - _csv(real_data))
    assert err[enough].max() < 0.2


def test_nonuniform_noisy_pattern_with_outliers():
    truth = np.sort(np.r_[np.linspace(-24.3, -8.8, 32), np.linspace(-8.3, 2.0, 32)])
    pattern = estimate_beams([_scan(truth, noise_deg=0.03, outliers=0.03)])
    assert pattern.count == 64
    assert np.abs(pattern.inclinations_deg - truth).max() < 0.05
    assert np.all(np.diff(pattern.inclinations) > 0)


def test_several_scans_combine():
    truth = np.linspace(-15, 15, 16)
    a = _scan(truth[:8], 300, seed=1)
    b = _scan(truth[8:], 300, seed=2)
    assert estimate_beams([a, b]).count == 16


def test_too_few_points():
    with pytest.raises(DataError, match="at least 100"):
        estimate_beams([np.ones((10, 3))])


def test_nearest_beam_and_spacing():
    beams = np.radians([-2.0, 0.0, 1.0])
    idx, dist = nearest_beam(np.radians([-1.2, 0.4, 0.6, 5.0]), beams)
    assert idx.tolist() == [0, 1, 2, 2]
    np.testing.assert_allclose(np.degrees(dist), [0.8, 0.4, 0.4, 4.0])
    np.testing.assert_allclose(np.degrees(beam_spacing(beams)), [2.0, 1.0, 1.0])


def test_cli_prints_count_and_writes_rig(real_data, tmp_path, capsys):
    scan = real_data / "hesai_xt32" / "1673400678101968885.pcd"
    rig = tmp_path / "rig.yaml"
    doc = yaml.safe_load((ROOT / "configs" / "rigs" / "fleet_xt32.yaml").read_text())
    doc["lidars"][0]["beams"] = {"count": 16, "min_deg": -15, "max_deg": 15}
    rig.write_text(yaml.safe_dump(doc))
    assert main(["rig", "beams", str(scan), "--write", str(rig)]) == 0
    out = capsys.readouterr().out
    assert "beams: 32" in out and "-16.024" in out
    from drivetl.calib import load_rig

    inc = np.degrees(load_rig(rig).lidar("TOP").inclinations)
    assert inc.size == 32 and np.abs(inc - _csv(real_data)).max() < 0.2


def test_cli_write_needs_lidar_choice_and_keeps_file(real_data, tmp_path, capsys):
    scan = real_data / "hesai_xt32" / "1673400678101968885.pcd"
    rig = tmp_path / "rig.yaml"
    shutil.copy(ROOT / "configs" / "rigs" / "waymo_like.yaml", rig)
    before = rig.read_bytes()
    assert main(["rig", "beams", str(scan), "--write", str(rig)]) == 2
    assert "--lidar" in capsys.readouterr().err
    assert rig.read_bytes() == before


def test_cli_unreadable_scan(tmp_path, capsys):
    bad = tmp_path / "bad.pcd"
    bad.write_bytes(b"not a pcd")
    assert main(["rig", "beams", str(bad)]) == 2
    assert "bad.pcd" in capsys.readouterr().err
