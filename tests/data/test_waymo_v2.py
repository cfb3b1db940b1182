"""Waymo v2 (Parquet): v1 -> v2 -> points round trip, row-group reads, the writer's files."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest

from drivetl.data.formats.waymo import (
    WaymoRecordIndex,
    WaymoV1Reader,
    WaymoV2Reader,
    WaymoV2RecordIndex,
    WaymoV2Writer,
    WaymoWriter,
    _v2_files,
    is_v2_folder,
)
from drivetl.data.formats.waymo import _v2_schema as S
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.data.records import FrameKey


@pytest.fixture(autouse=True)
def _fresh_files():
    _v2_files.forget_open_files()
    yield
    _v2_files.forget_open_files()


def _frames(n: int, seed: int = 0, segment: str = "seg", **shapes):
    shapes = shapes or {"top_shape": (8, 40), "side_shape": (6, 24)}
    record, range_images = synthetic_frame(seed, segment=segment, **shapes)
    for i in range(n):
        yield dataclasses.replace(record, key=FrameKey(segment, 1000 + 100_000 * i)), range_images


def v1_to_v2(v1_path, root) -> None:
    """Write the frames of a v1 file into a v2 folder through the readers and writers alone."""
    with WaymoV2Writer(root) as writer:
        for frame in WaymoV1Reader(v1_path):
            record = frame.to_record()
            writer.write(dataclasses.replace(record, lidars={}), frame.range_images())


def test_v1_to_v2_round_trip_points(tmp_path) -> None:
    """Full-size frames (five lasers, two returns, TOP pixel pose; one with per-pixel jitter):
    v1 -> v2 -> points equal the v1 points (all lasers, both returns)."""
    v1 = tmp_path / "full.tfrecord"
    with WaymoWriter(v1) as w:
        record, range_images = synthetic_frame(10, segment="a_full")
        w.write(record, range_images)  # full size: about a million points
        shapes = {"top_shape": (64, 500), "side_shape": (200, 120)}
        record, range_images = synthetic_frame(11, per_pixel_jitter=True, segment="b_jitter", **shapes)
        w.write(record, range_images)
    v1_to_v2(v1, tmp_path / "v2")
    reader = WaymoV2Reader(tmp_path / "v2", threads=2)
    assert len(reader) == 2
    for f1, f2 in zip(WaymoV1Reader(v1), reader, strict=True):
        assert f1.key == f2.key
        assert f1.lasers == f2.lasers == ("TOP", "FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR")
        p1, p2 = f1.point_features(), f2.point_features()
        assert len(p1) > (900_000 if f1.key.segment == "a_full" else 100_000)
        assert p1.shape == p2.shape
        assert np.abs(p1[:, :3] - p2[:, :3]).max() <= 1e-6
        np.testing.assert_array_equal(p1[:, 3:], p2[:, 3:])  # features, return index, laser id
        for laser in f1.lasers:
            for ret in (1, 2):
                np.testing.assert_allclose(f1.points(laser, ret), f2.points(laser, ret), rtol=0, atol=1e-6)
            assert f1.range_image_shape(laser) == f2.range_image_shape(laser)
        np.testing.assert_array_equal(f1.world_from_vehicle, f2.world_from_vehicle)


def test_frame_interface_matches_v1(tmp_path) -> None:
    v1 = tmp_path / "a.tfrecord"
    with WaymoWriter(v1) as w1, WaymoV2Writer(tmp_path / "v2") as w2:
        for record, range_images in _frames(3, seed=2):
            w1.write(record, range_images)
            w2.write(record, range_images)
    for f1, f2 in zip(WaymoV1Reader(v1), WaymoV2Reader(tmp_path / "v2"), strict=True):
        assert f1.key == f2.key
        np.testing.assert_array_equal(f1.point_features(), f2.point_features())
        assert {k: v.data for k, v in f1.images.items()} == {k: v.data for k, v in f2.images.items()}
        assert list(f2.images) == ["FRONT", "SIDE_LEFT"]
        for name in f1.image_poses:
            np.testing.assert_array_equal(f1.image_poses[name], f2.image_poses[name])
        for c1, c2 in zip(f1.cameras(), f2.cameras(), strict=True):
            for field in dataclasses.fields(c1):
                np.testing.assert_array_equal(getattr(c1, field.name), getattr(c2, field.name))
        for l1, l2 in zip(f1.rig.lidars, f2.rig.lidars, strict=True):
            assert l1.name == l2.name and l1.columns == l2.columns
            np.testing.assert_array_equal(l1.inclinations, l2.inclinations)
            np.testing.assert_array_equal(l1.vehicle_from_lidar, l2.vehicle_from_lidar)
        b1, b2 = f1.boxes, f2.boxes
        np.testing.assert_array_equal(b1.boxes, b2.boxes)
        assert b1.classes == b2.classes and b1.ids == b2.ids
        np.testing.assert_array_equal(b1.num_points, b2.num_points)
        np.testing.assert_array_equal(b1.difficulty, b2.difficulty)
        np.testing.assert_array_equal(b1.speed, b2.speed)
        r1, r2 = f1.to_record(), f2.to_record()
        assert r1.lidars.keys() == r2.lidars.keys()
        for name in r1.lidars:
            np.testing.assert_array_equal(r1.lidars[name].points, r2.lidars[name].points)


def test_record_index_and_pickling(tmp_path) -> None:
    v1 = tmp_path / "a.tfrecord"
    with WaymoWriter(v1) as w1, WaymoV2Writer(tmp_path / "v2") as w2:
        for seg in ("s1", "s0"):
            for record, range_images in _frames(2, seed=3, segment=seg):
                w1.write(record, range_images)
                w2.write(record, range_images)
    index = WaymoV2RecordIndex(tmp_path / "v2")
    assert len(index) == 4
    again = pickle.loads(pickle.dumps(index))  # what a data-loading worker receives
    _v2_files.forget_open_files()
    v1_records = {str(r.key): r for r in (WaymoRecordIndex([v1])[i] for i in range(4))}
    for i in range(4):
        rec = again[i]
        assert rec.key.segment == ("s0", "s0", "s1", "s1")[i]  # segments sorted by name
        ref = v1_records[str(rec.key)]
        for name in ref.lidars:
            np.testing.assert_array_equal(ref.lidars[name].points, rec.lidars[name].points)


def test_writer_files_follow_the_official_schema(tmp_path) -> None:
    frames = 4
    with WaymoV2Writer(tmp_path) as w:
        for record, range_images in _frames(frames, seed=4):
            w.write(record, range_images)
    assert is_v2_folder(tmp_path) and not is_v2_folder(tmp_path / "lidar")
    rows = {S.LIDAR: 5, S.LIDAR_POSE: 1, S.VEHICLE_POSE: 1, S.CAMERA_IMAGE: 2, S.LIDAR_BOX: 6}
    for comp in S.ALL:
        pf = pq.ParquetFile(tmp_path / comp / "seg.parquet")
        assert pf.schema_arrow.equals(S.arrow_schema(comp)), comp
        if comp in S.SEGMENT_LEVEL:
            assert pf.metadata.num_row_groups == 1
            continue
        # one row group per frame, each holding one frame's rows
        assert pf.metadata.num_row_groups == frames, comp
        for rg in range(frames):
            assert pf.metadata.row_group(rg).num_rows == rows[comp], comp
    assert not list(tmp_path.rglob(".*.partial"))


def test_writer_discards_an_unfinished_segment(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="stop"):
        with WaymoV2Writer(tmp_path) as w:
            for record, range_images in _frames(2, seed=5):
                w.write(record, range_images)
            raise RuntimeError("stop")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


class _RecordingFile(io.FileIO):
    """A file that records the (offset, size) of every read: the bytes a reader touched."""

    reads: list[tuple[str, int, int]] = []

    def read(self, size: int = -1) -> bytes:
        pos = self.tell()
        data = super().read(size)
        self.reads.append((self.name, pos, len(data)))
        return data

    def readinto(self, buffer) -> int:
        pos = self.tell()
        n = super().readinto(buffer)
        self.reads.append((self.name, pos, n or 0))
        return n


def _chunk_extents(pf, rg: int) -> dict[str, tuple[int, int]]:
    """Column path -> (start, end) byte extent of its chunk in row group `rg`."""
    out = {}
    meta = pf.metadata.row_group(rg)
    for j in range(meta.num_columns):
        col = meta.column(j)
        start = col.data_page_offset
        if col.has_dictionary_page and col.dictionary_page_offset is not None:
            start = min(start, col.dictionary_page_offset)
        out[col.path_in_schema] = (start, start + col.total_compressed_size)
    return out


def test_one_frame_reads_only_its_row_groups(tmp_path, monkeypatch) -> None:
    """A 200-frame segment: opening reads footers only; reading frame 137 reads bytes of frame 137's
    row groups only, and of the columns asked for (points never touch camera_image, and the camera
    models never touch the image bytes)."""
    root = tmp_path / "v2"
    with WaymoV2Writer(root) as w:
        for record, range_images in _frames(200, seed=6, top_shape=(8, 32), side_shape=(4, 16)):
            w.write(record, range_images)
    _RecordingFile.reads = []
    monkeypatch.setattr(_v2_files.ComponentFile, "open_source", lambda self: _RecordingFile(self.path))
    reader = WaymoV2Reader(root, threads=1)
    assert len(reader) == 200
    assert _RecordingFile.reads
    for name, offset, size in _RecordingFile.reads:  # opening: footers only
        end = os.path.getsize(name)
        footer = end - 8 - pq.ParquetFile(name).metadata.serialized_size
        assert offset >= min(footer, end - (64 << 10)) or size == 0, (name, offset)
    lidar = pq.ParquetFile(root / S.LIDAR / "seg.parquet")
    assert lidar.metadata.num_row_groups == 200
    # the lidar file is far bigger than the footer prefetch, so its reads below are real row-group reads
    assert (root / S.LIDAR / "seg.parquet").stat().st_size > 20 * (64 << 10)

    def reads_of(action) -> dict[str, list[tuple[int, int]]]:
        _RecordingFile.reads = []
        action()
        out: dict[str, list[tuple[int, int]]] = {}
        for name, offset, size in _RecordingFile.reads:
            if size:
                out.setdefault(str(name), []).append((offset, offset + size))
        return out

    frame = reader[137]
    assert frame.key.timestamp_us == 1000 + 137 * 100_000
    def assert_within_frame(touched) -> None:
        for path, ranges in touched.items():
            comp = os.path.basename(os.path.dirname(path))
            extents = _chunk_extents(pq.ParquetFile(path), 0 if comp in S.SEGMENT_LEVEL else 137)
            lo, hi = min(s for s, _ in extents.values()), max(e for _, e in extents.values())
            for start, end in ranges:
                assert lo <= start and end <= hi, (comp, start, end, lo, hi)

    lidar_file, image_file = (str(root / c / "seg.parquet") for c in (S.LIDAR, S.CAMERA_IMAGE))
    touched = reads_of(frame.points)
    assert lidar_file in touched and image_file not in touched
    assert_within_frame(touched)
    image_chunk = _chunk_extents(pq.ParquetFile(image_file), 137)[S.IMAGE]
    touched = reads_of(frame.cameras)
    assert_within_frame(touched)
    for start, end in touched[image_file]:
        assert end <= image_chunk[0] or start >= image_chunk[1]  # not a byte of the JPEG column
    touched = reads_of(lambda: frame.images)
    assert_within_frame(touched)
    assert any(s < image_chunk[1] and e > image_chunk[0] for s, e in touched[image_file])


def test_real_vehicle_pose_file(tmp_path, real_data) -> None:
    """The real v2 vehicle_pose file (199 frames in one row group, transforms as float32) with
    simulated lidar files for its keys: keys, poses and points read through it."""
    real = real_data / "waymo_v2" / "vehicle_pose"
    files = sorted(real.glob("*.parquet"))
    if not files:
        pytest.fail(f"{real} has no Parquet file although {real_data} exists; restore it or update this test")
    table = pq.read_table(files[0])
    segment = files[0].stem
    timestamps = table.column(S.TIMESTAMP).to_pylist()
    assert len(timestamps) == 199 and pq.ParquetFile(files[0]).metadata.num_row_groups == 1
    record, range_images = synthetic_frame(7, top_shape=(4, 16), side_shape=(2, 8), segment=segment)
    root = tmp_path / "v2"
    with WaymoV2Writer(root) as w:
        for t in timestamps:
            w.write(dataclasses.replace(record, key=FrameKey(segment, t)), range_images)
    (root / S.VEHICLE_POSE / f"{segment}.parquet").write_bytes(files[0].read_bytes())
    reader = WaymoV2Reader(root, threads=1)
    assert [k.timestamp_us for k in reader.keys] == sorted(timestamps)
    k = timestamps.index(sorted(timestamps)[50])
    frame = reader[50]
    expected = np.asarray(table.column(S.WORLD_FROM_VEHICLE)[k].as_py(), dtype=np.float64).reshape(4, 4)
    np.testing.assert_array_equal(frame.world_from_vehicle, expected)
    assert abs(frame.world_from_vehicle[0, 3] - 860.6) < 50  # metres, as in the real segment
    n = sum(int((ri.range_image[..., 0] > 0).sum()) for ri in range_images.values())
    assert frame.points().shape == (n, 3)
