"""Waymo range image -> points: hand-computed pixels, order, and the calib reference on full frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivetl.calib import LidarModel, SensorRig
from drivetl.data.formats.waymo import (
    FEATURE_COLUMNS,
    LASER_NAMES,
    RangeImageData,
    WaymoV1Reader,
    WaymoWriter,
    parse_frame,
    pixel_pose_matrices,
)
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.data.records import FrameKey, FrameRecord


def _rz(yaw: float, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    m[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    m[:3, 3] = t
    return m


def _hand_frame(tmp_path):
    """TOP: 3 non-uniform beams x 4 columns, identity mount, a pixel pose on column 1.
    FRONT: 2 uniform beams (written as min/max only) x 4 columns, yawed 90 degrees, at (1, 2, 3)."""
    top = LidarModel(
        name="TOP",
        model="t",
        vehicle_from_lidar=np.eye(4),
        inclinations=np.array([-0.3, -0.05, 0.02]),
        columns=4,
        max_range=75.0,
        returns=2,
    )
    front = LidarModel(
        name="FRONT",
        model="f",
        vehicle_from_lidar=_rz(math.pi / 2, (1.0, 2.0, 3.0)),
        inclinations=np.array([-0.1, 0.1]),
        columns=4,
        max_range=20.0,
        returns=2,
    )
    rig = SensorRig(name="hand", lidars=(top, front))
    world_from_vehicle = _rz(0.0, (100.0, 200.0, 0.0))
    record = FrameRecord(key=FrameKey("hand", 7), rig=rig, world_from_vehicle=world_from_vehicle)
    ri_top = np.zeros((2, 3, 4, 4), np.float32)
    ri_top[0, 0, 1] = (2.0, 0.5, 0.1, -1.0)  # row 0 (inclination 0.02), column 1
    ri_top[0, 2, 3] = (4.0, 0.25, 0.2, 1.0)  # row 2 (inclination -0.3), column 3, in a no-label zone
    ri_top[0, 1, 2] = (-1.0, 0.0, 0.0, -1.0)  # no return
    ri_top[1, 1, 0] = (3.0, 0.75, 0.0, -1.0)  # second return, row 1 (inclination -0.05), column 0
    pose = np.zeros((3, 4, 6), np.float32)
    pose[..., 3:] = (100.0, 200.0, 0.0)
    pose[:, 1] = (0.0, 0.0, math.pi / 2, 100.0, 201.0, 0.0)  # column 1 fired at y+1, turned 90 degrees
    ri_front = np.zeros((1, 2, 4, 4), np.float32)
    ri_front[0, 0, 0] = (10.0, 1.5, 0.0, -1.0)
    ri_front[0, 1, 2] = (5.0, 2.5, 0.0, -1.0)
    path = tmp_path / "hand.tfrecord"
    with WaymoWriter(path) as w:
        w.write(
            record, {"TOP": RangeImageData("TOP", ri_top, pose), "FRONT": RangeImageData("FRONT", ri_front)}
        )
    return path


def test_hand_computed_points(tmp_path) -> None:
    path = _hand_frame(tmp_path)
    frame = next(iter(WaymoV1Reader(path)))
    cals = {int(c.name): c for c in frame.proto.context.laser_calibrations}
    assert len(cals[1].beam_inclinations) == 3 and len(cals[2].beam_inclinations) == 0  # FRONT: min/max
    assert cals[2].beam_inclination_min == pytest.approx(-0.2) and cals[
        2
    ].beam_inclination_max == pytest.approx(0.2)
    c1, s1 = math.cos(0.1), math.sin(0.1)
    h = math.sqrt(0.5)
    expected_r1 = [
        # TOP row 0, col 1: azimuth ((4-1-0.5)/4*2-1) pi = pi/4, inclination 0.02, range 2;
        # fired at y+1 turned +90 deg: world = Rz(90) p + (100, 201, 0); vehicle = world - (100, 200, 0).
        (-2 * math.cos(0.02) * h, 1 + 2 * math.cos(0.02) * h, 2 * math.sin(0.02)),
        # TOP row 2 (inclination -0.3, the lowest beam), col 3: azimuth -3 pi / 4, range 4, no pose change.
        (-4 * math.cos(0.3) * h, -4 * math.cos(0.3) * h, -4 * math.sin(0.3)),
        # FRONT row 0 (0.1), col 0: azimuth 3 pi/4 - az_correction (pi/2) = pi/4; vehicle = Rz(90) p + t.
        (1 - 10 * c1 * h, 2 + 10 * c1 * h, 3 + 10 * s1),
        # FRONT row 1 (-0.1), col 2: azimuth -pi/4 - pi/2 = -3 pi/4.
        (1 + 5 * c1 * h, 2 - 5 * c1 * h, 3 - 5 * s1),
    ]
    expected_r2 = [
        (
            3 * math.cos(0.05) * math.cos(3 * math.pi / 4),
            3 * math.cos(0.05) * math.sin(3 * math.pi / 4),
            -3 * math.sin(0.05),
        )
    ]
    np.testing.assert_allclose(frame.points(return_index=1), expected_r1, atol=1e-5)
    np.testing.assert_allclose(frame.points(return_index=2), expected_r2, atol=1e-5)
    np.testing.assert_allclose(frame.points(), expected_r1 + expected_r2, atol=1e-5)
    np.testing.assert_allclose(frame.points(laser="FRONT"), expected_r1[2:], atol=1e-5)
    # the same numbers written out, as a check on the formulas above
    np.testing.assert_allclose(expected_r1[2], (-6.035742, 9.035742, 3.998334), atol=1e-6)
    feats = frame.point_features()
    assert feats.shape == (5, len(FEATURE_COLUMNS))
    col = {c: i for i, c in enumerate(FEATURE_COLUMNS)}
    np.testing.assert_allclose(feats[:, col["range"]], [2, 4, 10, 5, 3])
    np.testing.assert_allclose(feats[:, col["intensity"]], [0.5, 0.25, 1.5, 2.5, 0.75])
    np.testing.assert_allclose(feats[:, col["elongation"]], [0.1, 0.2, 0, 0, 0], atol=1e-7)
    np.testing.assert_array_equal(feats[:, col["no_label_zone"]], [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(feats[:, col["return_index"]], [1, 1, 1, 1, 2])
    np.testing.assert_array_equal(feats[:, col["laser_id"]], [1, 1, 2, 2, 1])


def _reference_points(record, range_images, return_index):
    """Points by drivetl.calib's LidarModel reference, in Waymo's laser order."""
    parts = []
    for name in LASER_NAMES:
        lidar = record.rig.lidar(name)
        data = range_images[name]
        ri = data.range_image[return_index - 1][..., 0]
        if data.pixel_pose is not None:
            pts, _ = lidar.range_image_to_points(
                ri, pixel_pose_matrices(data.pixel_pose), record.world_from_vehicle
            )
        else:
            pts, _ = lidar.range_image_to_points(ri)
        parts.append(pts)
    return np.concatenate(parts)


@pytest.mark.parametrize("jitter", [False, True], ids=["per-column-pose", "per-pixel-pose"])
@pytest.mark.parametrize("threads", [1, 3])
def test_matches_calib_reference(tmp_path, jitter: bool, threads: int) -> None:
    record, range_images = synthetic_frame(
        3, top_shape=(16, 300), side_shape=(10, 60), per_pixel_jitter=jitter
    )
    path = tmp_path / "syn.tfrecord"
    with WaymoWriter(path) as w:
        w.write(record, range_images)
    frame = next(iter(WaymoV1Reader(path, threads=threads)))
    for ret in (1, 2):
        ours = frame.points(return_index=ret)
        ref = _reference_points(record, range_images, ret)
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)  # 1 mm, same count and order
        assert np.abs(ours - ref).max() < 1e-4
    both = frame.points()
    assert len(both) == len(frame.points(return_index=1)) + len(frame.points(return_index=2))
    # per-laser selection is a slice of the concatenation
    top1 = frame.points(laser="TOP", return_index=1)
    np.testing.assert_array_equal(both[: len(top1)], top1)


def test_round_trip_record(tmp_path) -> None:
    record, range_images = synthetic_frame(5, top_shape=(8, 40), side_shape=(6, 24))
    path = tmp_path / "rt.tfrecord"
    with WaymoWriter(path) as w:
        w.write(record, range_images)
        w.write(record, range_images)
    frames = list(WaymoV1Reader(path))
    assert len(frames) == 2
    frame = frames[0]
    assert frame.key == record.key
    np.testing.assert_allclose(frame.world_from_vehicle, record.world_from_vehicle)
    # boxes: classes, ids, geometry, metadata
    assert frame.boxes.classes == record.boxes.classes
    assert frame.boxes.ids == record.boxes.ids
    np.testing.assert_allclose(frame.boxes.boxes, record.boxes.boxes)
    np.testing.assert_array_equal(frame.boxes.num_points, record.boxes.num_points)
    np.testing.assert_array_equal(frame.boxes.difficulty, record.boxes.difficulty)
    np.testing.assert_allclose(frame.boxes.speed, record.boxes.speed)
    # images and cameras
    assert {k: v.data for k, v in frame.images.items()} == {k: v.data for k, v in record.cameras.items()}
    for cam in record.rig.cameras:
        got = frame.rig.camera(cam.name)
        assert (got.width, got.height, got.fx, got.fy, got.cx, got.cy) == (
            cam.width,
            cam.height,
            cam.fx,
            cam.fy,
            cam.cx,
            cam.cy,
        )
        assert (got.k1, got.k2, got.p1, got.p2, got.k3) == (cam.k1, cam.k2, cam.p1, cam.p2, cam.k3)
        np.testing.assert_allclose(got.vehicle_from_camera, cam.vehicle_from_camera)
        assert got.rolling_shutter_direction == cam.rolling_shutter_direction
        assert got.readout_time_s == pytest.approx(cam.readout_time_s, abs=1e-6)
        assert frame.images[cam.name].size() == (cam.width, cam.height)
    # lidars: calibration survives, uniform side lasers are written as min/max only
    for lidar in record.rig.lidars:
        got = frame.rig.lidar(lidar.name)
        np.testing.assert_allclose(got.inclinations, lidar.inclinations, atol=1e-12)
        np.testing.assert_allclose(got.vehicle_from_lidar, lidar.vehicle_from_lidar)
        assert got.columns == lidar.columns
    explicit = {int(c.name): len(c.beam_inclinations) for c in frame.proto.context.laser_calibrations}
    assert explicit == {1: 8, 2: 0, 3: 0, 4: 0, 5: 0}
    # to_record: per-laser points with both returns, raw intensity, vehicle frame
    rec = frame.to_record()
    assert list(rec.lidars) == list(LASER_NAMES)
    top = rec.lidars["TOP"]
    assert top.columns[:4] == ("x", "y", "z", "intensity") and top.frame == "vehicle"
    np.testing.assert_array_equal(top.points[:, :3], frame.points(laser="TOP"))
    raw = range_images["TOP"].range_image
    valid = raw[..., 0] > 0
    np.testing.assert_array_equal(top.column("intensity"), raw[..., 1][valid])
    assert sorted(set(top.column("return_index").tolist())) == [1.0, 2.0]
    assert set(top.column("laser_id").tolist()) == {1.0}
    nlz_kept = frame.to_record(drop_no_label_zone=True).lidars["TOP"]
    assert len(nlz_kept) == int((raw[..., 0] > 0).sum() - ((raw[..., 0] > 0) & (raw[..., 3] > 0)).sum())


def test_frame_proto_is_valid_waymo(tmp_path) -> None:
    """Our writer's records parse with the official schema and carry what official tools expect."""
    from waymo_open_dataset import dataset_pb2

    record, range_images = synthetic_frame(1, top_shape=(8, 40), side_shape=(6, 24))
    path = tmp_path / "v.tfrecord"
    with WaymoWriter(path) as w:
        w.write(record, range_images)
    frame = next(iter(WaymoV1Reader(path))).proto
    again = dataset_pb2.Frame()
    again.ParseFromString(frame.SerializeToString())
    assert again.context.name == "synthetic_segment"
    assert [la.name for la in again.lasers] == [1, 2, 3, 4, 5]
    assert all(
        la.ri_return1.camera_projection_compressed and la.ri_return2.range_image_compressed
        for la in again.lasers
    )
    assert again.lasers[0].ri_return1.range_image_pose_compressed
    import zlib

    ri = dataset_pb2.MatrixFloat()
    ri.ParseFromString(zlib.decompress(again.lasers[0].ri_return1.range_image_compressed))
    assert list(ri.shape.dims) == [8, 40, 4]
    np.testing.assert_array_equal(
        np.asarray(ri.data, np.float32).reshape(8, 40, 4), range_images["TOP"].range_image[0]
    )
    assert parse_frame(again.SerializeToString(), "x").timestamp_micros == record.key.timestamp_us


def test_matrix_codec_matches_protobuf() -> None:
    from waymo_open_dataset import dataset_pb2

    from drivetl.data.formats.waymo._matrix import parse_matrix, serialize_matrix_float

    a = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    m = dataset_pb2.MatrixFloat()
    m.data.extend(a.reshape(-1).tolist())
    m.shape.dims.extend(a.shape)
    assert serialize_matrix_float(a) == m.SerializeToString()
    np.testing.assert_array_equal(parse_matrix(m.SerializeToString(), "<f4"), a)
    big = np.zeros((300, 200, 6), np.float32)  # multi-byte varints for lengths and dims
    np.testing.assert_array_equal(parse_matrix(serialize_matrix_float(big), "<f4"), big)


def test_range_channel_is_read_in_place() -> None:
    """Channel 0 of a contiguous (H, W, 4) range image is viewed, not copied, and gives the same
    points as a contiguous copy of it."""
    from drivetl.data.formats.waymo._range_image import _flat_view, range_image_points

    rng = np.random.default_rng(0)
    ri = rng.uniform(-1, 50, (6, 10, 4)).astype(np.float32)
    view = _flat_view(ri[..., 0])
    assert np.shares_memory(view, ri)
    np.testing.assert_array_equal(view, ri[..., 0].reshape(-1))
    inc = np.linspace(-0.3, 0.1, 6)
    pose = _rz(0.4, (1.0, 2.0, 3.0))
    a, pa = range_image_points(ri[..., 0], inc, pose)
    b, pb = range_image_points(np.ascontiguousarray(ri[..., 0]), inc, pose)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa, pb)
    sub = ri[:, :5, 0]  # rows not evenly spaced in memory: copied, same values
    assert not np.shares_memory(_flat_view(sub), ri)
    np.testing.assert_array_equal(_flat_view(sub), sub.reshape(-1))
