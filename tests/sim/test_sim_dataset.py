"""Datasets: Waymo v1 files read back with the Waymo reader, team folders round-trip, same seed gives
identical files, reruns resume, bad input gives one clear error."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from drivetl.calib import save_rig
from drivetl.cli import main
from drivetl.errors import ConfigError
from drivetl.sim.dataset import SimulationPlan, simulate_dataset
from drivetl.sim.frame import points_in_box


def _plan(rig, out: Path, fmt: str = "waymo", frames: int = 3, seed: int = 5) -> SimulationPlan:
    return SimulationPlan(rig, frames, out, fmt, seed=seed, frames_per_segment=2, shard_frames=2)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _count_bounds(points: np.ndarray, box: np.ndarray, slack: float = 1e-4) -> tuple[int, int]:
    """Points in the box shrunk and grown by `slack` metres per face. The reader rebuilds points from
    the range image and the float32 per-pixel pose, so a return within float32 rounding (~1e-5 m) of
    a face may land on its other side: the label's count must lie between the two."""
    lo, hi = box.copy(), box.copy()
    lo[3:6] -= 2 * slack
    hi[3:6] += 2 * slack
    return int(points_in_box(points, lo).sum()), int(points_in_box(points, hi).sum())


@pytest.fixture(scope="module")
def waymo_out(tmp_path_factory, waymo_rig):
    out = tmp_path_factory.mktemp("sim_waymo")
    summary = simulate_dataset(_plan(waymo_rig, out))
    return out, summary


def test_waymo_file_reads_back_with_sensors_points_and_labels(waymo_out, waymo_rig):
    from drivetl.data.formats.waymo import WaymoV1Reader

    out, summary = waymo_out
    files = sorted(out.glob("*.tfrecord"))
    assert [f.name for f in files] == [
        "sim_waymo_like_us_s5_00000_part000.tfrecord",
        "sim_waymo_like_us_s5_00001_part000.tfrecord",
    ]
    frames = [fr for f in files for fr in WaymoV1Reader(f)]
    assert len(frames) == 3 and summary.frames == 3
    for fr in frames:
        assert set(fr.lasers) == {"TOP", "FRONT"}
        assert set(fr.images) == {"FRONT"}
        rig = fr.rig
        assert rig.lidar("TOP").columns == waymo_rig.lidar("TOP").columns
        np.testing.assert_allclose(
            rig.lidar("TOP").vehicle_from_lidar, waymo_rig.lidar("TOP").vehicle_from_lidar, atol=1e-9
        )
        assert fr.images["FRONT"].size() == (waymo_rig.cameras[0].width, waymo_rig.cameras[0].height)
        pts = fr.points()
        assert len(fr.points("TOP", 1)) > 10_000
        boxes = fr.boxes
        assert len(boxes) > 3 and set(boxes.classes) <= {"vehicle", "pedestrian", "cyclist", "sign"}
        for k in range(len(boxes)):  # num_points are the read-back points in each box
            assert boxes.num_points[k] > 0
            assert (
                _count_bounds(pts, boxes.boxes[k])[0]
                <= boxes.num_points[k]
                <= _count_bounds(pts, boxes.boxes[k])[1]
            )
    assert summary.points["TOP"][0] == len(frames[0].points("TOP", 1))


def test_same_seed_gives_identical_files_and_rerun_resumes(waymo_out, waymo_rig, tmp_path):
    out, _ = waymo_out
    again = tmp_path / "again"
    simulate_dataset(_plan(waymo_rig, again))
    assert _digest(again) == _digest(out)
    shard = again / "sim_waymo_like_us_s5_00001_part000.tfrecord"
    shard.unlink()
    summary = simulate_dataset(_plan(waymo_rig, again))
    assert (summary.frames, summary.skipped) == (1, 2)
    assert _digest(again) == _digest(out)
    other = tmp_path / "other"
    simulate_dataset(_plan(waymo_rig, other, frames=2, seed=6))
    assert set(_digest(other).values()).isdisjoint(_digest(out).values())


def test_team_format_round_trip(tmp_path):
    from drivetl.data.formats.team import TeamReader
    from drivetl.sim.dataset import _render, _worker_init

    from .conftest import small_rig

    rig = small_rig("fleet_xt32", columns=400)
    plan = _plan(rig, tmp_path / "team", "team", frames=2)
    summary = simulate_dataset(plan)
    assert summary.frames == 2
    reader = TeamReader(plan.out)
    assert len(reader) == 2
    _worker_init(plan)
    for g, rec in enumerate(reader):
        want = _render(g).record
        assert rec.key == want.key
        lp = rec.lidars["TOP"]
        np.testing.assert_array_equal(lp.points, want.lidars["TOP"].points)
        assert lp.frame == "vehicle" and lp.columns[:4] == ("x", "y", "z", "intensity")
        np.testing.assert_allclose(rec.boxes.boxes, want.boxes.boxes, atol=1e-6)
        assert rec.boxes.classes == want.boxes.classes
        np.testing.assert_array_equal(rec.boxes.num_points, want.boxes.num_points)
        assert rec.cameras["FRONT"].data == want.cameras["FRONT"].data
        np.testing.assert_allclose(rec.world_from_vehicle, want.world_from_vehicle)
    assert reader[0].rig.lidar("TOP").intensity.kind == "uint8"
    before = _digest(plan.out)
    summary = simulate_dataset(plan)
    assert (summary.frames, summary.skipped) == (0, 2) and _digest(plan.out) == before


def test_cli_simulate_and_its_errors(tmp_path, capsys):
    from .conftest import small_rig

    rig_path = tmp_path / "rig.yaml"
    rig = small_rig("fleet_vlp16", columns=300, camera_width=96)
    save_rig(rig, rig_path)
    out = tmp_path / "out"
    code = main(
        [
            "simulate",
            "--rig",
            str(rig_path),
            "--frames",
            "1",
            "--out",
            str(out),
            "--format",
            "team",
            "--region",
            "eu",
            "--frames-per-segment",
            "10",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "frames simulated: 1" in text and "first-return points per frame" in text
    assert (out / "rig.yaml").is_file()
    assert (
        main(["simulate", "--rig", str(rig_path), "--frames", "1", "--out", str(out), "--region", "mars"])
        == 2
    )
    assert "region 'mars'" in capsys.readouterr().err
    assert (
        main(["simulate", "--rig", str(tmp_path / "missing.yaml"), "--frames", "1", "--out", str(out)]) == 2
    )
    renamed = dataclasses.replace(rig, lidars=(dataclasses.replace(rig.lidars[0], name="ROOF"),))
    with pytest.raises(ConfigError, match="lidar 'ROOF' has no Waymo name.*--format team"):
        SimulationPlan(rig=renamed, frames=1, out=out, format="waymo")
    SimulationPlan(rig=renamed, frames=1, out=out, format="team")  # any name is fine there
    with pytest.raises(ConfigError, match="multiple of the shard size"):
        SimulationPlan(rig=None, frames=1, out=out, frames_per_segment=15, shard_frames=10)


@pytest.mark.slow
def test_workers_do_not_change_the_files(waymo_out, waymo_rig, tmp_path):
    """Two worker processes (spawned) write the same bytes as one process."""
    out, _ = waymo_out
    parallel = tmp_path / "parallel"
    summary = simulate_dataset(_plan(waymo_rig, parallel), workers=2)
    assert summary.frames == 3
    assert _digest(parallel) == _digest(out)
    one, two = tmp_path / "v2_one", tmp_path / "v2_two"  # Waymo v2: a segment per worker job
    simulate_dataset(_plan(waymo_rig, one, "waymo-v2"))
    assert simulate_dataset(_plan(waymo_rig, two, "waymo-v2"), workers=2).frames == 3
    assert _digest(two) == _digest(one)


def test_waymo_v2_matches_v1_and_resumes(waymo_out, waymo_rig, tmp_path):
    """The same plan written as Waymo v2: one Parquet file per component per segment, frames equal
    to the v1 output's; a rerun skips finished segments and redoes an unfinished one."""
    from drivetl.data.formats.waymo import WaymoV1Reader, WaymoV2Reader

    out, _ = waymo_out
    v2 = tmp_path / "v2"
    summary = simulate_dataset(_plan(waymo_rig, v2, "waymo-v2"))
    assert summary.frames == 3
    assert sorted(p.name for p in (v2 / "lidar").iterdir()) == [
        "sim_waymo_like_us_s5_00000.parquet",
        "sim_waymo_like_us_s5_00001.parquet",
    ]
    v1_frames = [fr for f in sorted(out.glob("*.tfrecord")) for fr in WaymoV1Reader(f)]
    v2_frames = list(WaymoV2Reader(v2))
    assert [f.key for f in v1_frames] == [f.key for f in v2_frames]
    for f1, f2 in zip(v1_frames, v2_frames, strict=True):
        np.testing.assert_array_equal(f1.point_features(), f2.point_features())
        np.testing.assert_array_equal(f1.boxes.boxes, f2.boxes.boxes)
        assert f1.images["FRONT"].data == f2.images["FRONT"].data
    before = _digest(v2)
    (v2 / "vehicle_pose" / "sim_waymo_like_us_s5_00001.parquet").unlink()  # as if killed before finishing
    summary = simulate_dataset(_plan(waymo_rig, v2, "waymo-v2"))
    assert (summary.frames, summary.skipped) == (1, 2)
    assert _digest(v2) == before
