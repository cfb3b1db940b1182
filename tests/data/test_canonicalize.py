"""Canonicalization: frames, ground, intensity, beam re-sampling, size shift, cameras."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from drivetl.calib import IntensityEncoding, LidarModel, load_rig
from drivetl.calib.beams import nearest_beam, point_inclinations
from drivetl.data.canonicalize import (
    apply_size_shift,
    beam_resample_mask,
    canonicalize,
    estimate_ground,
    points_in_boxes,
    size_shift_between,
    size_statistics,
)
from drivetl.data.formats.team._example import example_record
from drivetl.data.records import Boxes, FrameKey, FrameRecord, LidarPoints

ROOT = Path(__file__).resolve().parents[2]
KEY = FrameKey("s", 1)


def _rig(name: str, only_top: bool = True, columns: int | None = None):
    rig = load_rig(ROOT / "configs" / "rigs" / f"{name}.yaml")
    if only_top:
        top = rig.lidars[0]
        if columns:
            top = dataclasses.replace(top, columns=columns)
        rig = dataclasses.replace(rig, lidars=(top,))
    return rig


@pytest.mark.parametrize("name", ["fleet_xt32", "waymo_like", "fleet_vlp16"])
def test_simulated_rigs_have_ground_at_zero(name):
    rig = _rig(name, columns=900)
    rec = example_record(rig, KEY, seed=3)
    assert rec.lidars[rig.lidars[0].name].frame == "sensor"
    sample = canonicalize(rec)
    fit = estimate_ground(sample.points)
    assert abs(fit.height) < 0.05
    assert sample.points[:, 3].min() >= 0 and sample.points[:, 3].max() <= 1
    assert sample.columns[:4] == ("x", "y", "z", "intensity")


def test_estimated_ground_is_reported():
    rig = dataclasses.replace(_rig("fleet_xt32", columns=900), ground="estimate")
    rec = example_record(rig, KEY, seed=1, ground_z=-1.4)
    info: dict = {}
    sample = canonicalize(rec, report=info)
    assert info["ground_source"] == "estimate" and abs(info["ground_z"] + 1.4) < 0.05
    assert abs(estimate_ground(sample.points).height) < 0.05
    # Boxes move with the points: their bottoms sit on the canonical ground.
    bottoms = sample.boxes.boxes[:, 2] - sample.boxes.boxes[:, 5] / 2
    np.testing.assert_allclose(bottoms, 0.0, atol=0.05)


def test_ground_from_rig_value_shifts_points_boxes_and_cameras():
    rig = dataclasses.replace(_rig("fleet_xt32", columns=600), ground=-0.5)
    rec = example_record(rig, KEY, seed=2)
    sample = canonicalize(rec)
    assert abs(estimate_ground(sample.points).height) < 0.05
    cam_raw = rig.cameras[0]
    cam = sample.cameras[0]
    p_vehicle = np.array([[10.0, 0.5, 0.3]])
    p_canon = p_vehicle - [0, 0, -0.5]
    uv0, _, _ = cam_raw.project(p_vehicle)
    uv1, _, _ = cam.project(p_canon)
    np.testing.assert_allclose(uv0, uv1, atol=1e-6)
    assert sample.images[cam.name].shape == (cam.height, cam.width, 3)


def test_vehicle_frame_points_and_intensity_encodings():
    rig = _rig("waymo_like", columns=600)
    raw = np.array([0.0, 0.5, 1.0, 20.0], np.float32)
    pts = np.c_[np.array([[5, 0, 0], [6, 0, 0], [7, 0, 0], [8, 0, 0]], np.float32), raw]
    rec = FrameRecord(KEY, rig, {"TOP": LidarPoints("TOP", pts, frame="vehicle")})
    sample = canonicalize(rec, ground=0.0)
    np.testing.assert_allclose(sample.points[:, :3], pts[:, :3])
    np.testing.assert_allclose(sample.points[:, 3], np.tanh(raw), atol=1e-6)
    enc = IntensityEncoding("uint8", 255.0)
    np.testing.assert_allclose(enc.to_canonical(np.array([0, 51, 255])), [0, 0.2, 1.0], atol=1e-6)


def test_beam_resampling_keeps_matching_beams():
    src_inc = LidarModel.uniform_inclinations(64, np.radians(-24), np.radians(2))
    rng = np.random.default_rng(0)
    inc = np.repeat(src_inc, 200)
    az = rng.uniform(-np.pi, np.pi, inc.size)
    pts = np.c_[np.cos(inc) * np.cos(az), np.cos(inc) * np.sin(az), np.sin(inc)] * 20
    target = src_inc[::2] + np.radians(0.05)  # every other beam, slightly off
    keep = beam_resample_mask(pts, src_inc, target)
    assert keep.mean() == pytest.approx(0.5, abs=0.01)
    kept_inc = point_inclinations(pts[keep])
    _, dist = nearest_beam(kept_inc, np.sort(target))
    assert np.degrees(dist).max() < 0.1
    # Estimated source beams (rig without a usable table) give the same answer.
    np.testing.assert_array_equal(beam_resample_mask(pts, None, target), keep)


def test_canonicalize_with_target_beams():
    rig = _rig("waymo_like", columns=900)
    target = _rig("fleet_xt32").lidars[0]
    rec = example_record(rig, KEY, seed=4)
    info: dict = {}
    sample = canonicalize(rec, target_beams=target, report=info)
    assert 0 < info["kept_points"] < info["lidar_points"]
    assert len(sample.points) == info["kept_points"]


def _in_vehicle_frame(rec: FrameRecord) -> FrameRecord:
    """The same scans as `rec` (stored in each LiDAR's frame), stored in the vehicle frame instead."""
    lidars = {}
    for name, lp in rec.lidars.items():
        m = rec.rig.lidar(name).vehicle_from_lidar
        pts = lp.points.astype(np.float64)
        pts[:, :3] = pts[:, :3] @ m[:3, :3].T + m[:3, 3]
        lidars[name] = LidarPoints(name, pts.astype(np.float32), lp.columns, frame="vehicle")
    return dataclasses.replace(rec, lidars=lidars)


def test_beam_resampling_is_the_same_for_sensor_and_vehicle_frame_points():
    # waymo_like's TOP sits 2.18 m up and is yawed on its mount: elevations seen from the vehicle
    # origin are not the beams' inclinations, so measuring them there keeps the wrong points.
    rig = _rig("waymo_like", columns=900)
    target = _rig("fleet_xt32").lidars[0]
    rec_sensor = example_record(rig, KEY, seed=4)
    rec_vehicle = _in_vehicle_frame(rec_sensor)
    assert rec_vehicle.lidars["TOP"].frame == "vehicle"
    info_s: dict = {}
    info_v: dict = {}
    from_sensor = canonicalize(rec_sensor, target_beams=target, report=info_s, decode_images=False)
    from_vehicle = canonicalize(rec_vehicle, target_beams=target, report=info_v, decode_images=False)

    # The oracle: the mask from the scan in its own frame, where the beam inclinations are defined.
    sensor_xyz = rec_sensor.lidars["TOP"].points[:, :3].astype(np.float64)
    src = np.sort(rig.lidars[0].inclinations)
    mask = beam_resample_mask(sensor_xyz, src, target.inclinations)
    assert 0 < mask.sum() < len(mask)
    assert info_s["kept_points"] == info_v["kept_points"] == mask.sum()
    m = rig.lidars[0].vehicle_from_lidar
    expected = sensor_xyz[mask] @ m[:3, :3].T + m[:3, 3]  # the rig's ground is z = 0
    np.testing.assert_allclose(from_sensor.points[:, :3], expected, atol=1e-4)
    np.testing.assert_allclose(from_vehicle.points[:, :3], expected, atol=1e-4)

    # Every kept point lies within half a (source) beam spacing of a target beam, measured in the
    # sensor frame from the canonical points.
    kept_sensor = (from_vehicle.points[:, :3].astype(np.float64) - m[:3, 3]) @ m[:3, :3]
    src_idx, _ = nearest_beam(point_inclinations(kept_sensor), src)
    _, to_target = nearest_beam(point_inclinations(kept_sensor), np.sort(target.inclinations))
    half = 0.5 * np.minimum(np.diff(src, prepend=-np.inf), np.diff(src, append=np.inf))
    assert (to_target <= half[src_idx] + 1e-6).all()
    # Each target beam that some scanned point lies close to keeps points close to it.
    tgt = np.sort(target.inclinations)
    _, gap_scan = nearest_beam(tgt, np.sort(point_inclinations(sensor_xyz)))
    _, gap_kept = nearest_beam(tgt, np.sort(point_inclinations(kept_sensor)))
    reachable = gap_scan < np.radians(0.25)
    assert reachable.sum() >= 15
    assert (gap_kept[reachable] < np.radians(0.25)).all()


def test_size_shift_scales_points_with_the_box():
    boxes = Boxes(np.array([[10.0, 2.0, 0.8, 4.0, 2.0, 1.6, 0.7]]), ("vehicle",))
    rng = np.random.default_rng(0)
    local = rng.uniform(-0.5, 0.5, (500, 3)) * [4.0, 2.0, 1.6]
    c, s = np.cos(0.7), np.sin(0.7)
    pts = np.c_[
        local[:, 0] * c - local[:, 1] * s + 10,
        local[:, 0] * s + local[:, 1] * c + 2,
        local[:, 2] + 0.8,
        np.ones(500),
    ].astype(np.float32)
    outside = np.array([[30.0, 0.0, 0.5, 0.3]], np.float32)
    new_pts, new_boxes = apply_size_shift(np.r_[pts, outside], boxes, {"vehicle": (0.4, 0.2, -0.2)})
    np.testing.assert_allclose(new_boxes.boxes[0, 3:6], [4.4, 2.2, 1.4])
    assert new_boxes.boxes[0, 2] - 0.7 == pytest.approx(0.0)  # bottom face stays on the ground
    assert points_in_boxes(new_pts[:500], new_boxes.boxes).all()
    np.testing.assert_array_equal(new_pts[500], outside[0])
    np.testing.assert_array_equal(new_pts[:500, 3], 1.0)


def test_size_statistics_and_shift():
    rig = _rig("fleet_xt32")
    recs = []
    for sizes in ([[4, 2, 1.5], [5, 2, 1.7]], [[4.5, 2.2, 1.6]]):
        b = np.array([[0, 0, 0, *s, 0] for s in sizes], float)
        recs.append(FrameRecord(KEY, rig, {}, {}, Boxes(b, ("vehicle",) * len(sizes))))
    stats = size_statistics(recs)
    assert stats["vehicle"]["count"] == 3
    np.testing.assert_allclose(stats["vehicle"]["mean"], [4.5, 2.0667, 1.6], atol=1e-3)
    shift = size_shift_between(stats, {"vehicle": {"mean": np.array([4.0, 1.8, 1.5])}, "cyclist": {}})
    np.testing.assert_allclose(shift["vehicle"], [-0.5, -0.2667, -0.1], atol=1e-3)
    assert set(shift) == {"vehicle"}


def test_ground_fit_prefers_the_road_over_a_roof():
    rng = np.random.default_rng(1)
    road = np.c_[rng.uniform(-30, 30, (4000, 2)), rng.normal(-1.7, 0.02, 4000)]
    roof = np.c_[rng.uniform(5, 9, (3500, 2)), rng.normal(-0.2, 0.02, 3500)]
    fit = estimate_ground(np.r_[road, roof])
    assert fit.height == pytest.approx(-1.7, abs=0.03) and fit.tilt_deg < 1
