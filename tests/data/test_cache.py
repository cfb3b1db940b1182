"""The training cache: round trip, index, damage, and `drivetl convert waymo` (parallel, resumable)."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest

from drivetl.cli import main
from drivetl.data.cache import ShardWriter, TrainingCache, write_index, write_records
from drivetl.data.formats.waymo import WaymoV1Reader, WaymoWriter
from drivetl.data.formats.waymo._convert import convert_waymo, shard_name
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.data.records import FrameKey
from drivetl.errors import DataError


@pytest.fixture(scope="module")
def small():
    return synthetic_frame(4, top_shape=(8, 40), side_shape=(6, 24))


def _waymo_file(path, small, segment: str, frames: int = 3):
    record, range_images = small
    with WaymoWriter(path) as w:
        for i in range(frames):
            w.write(dataclasses.replace(record, key=FrameKey(segment, 1000 + i)), range_images)
    return path


def _assert_same(a, b) -> None:
    assert a.key == b.key
    np.testing.assert_array_equal(a.world_from_vehicle, b.world_from_vehicle)
    assert list(a.lidars) == list(b.lidars)
    for name in a.lidars:
        assert a.lidars[name].columns == b.lidars[name].columns
        np.testing.assert_array_equal(a.lidars[name].points, b.lidars[name].points)
    assert {k: v.data for k, v in a.cameras.items()} == {k: v.data for k, v in b.cameras.items()}
    np.testing.assert_array_equal(a.boxes.boxes, b.boxes.boxes)
    assert a.boxes.classes == b.boxes.classes and a.boxes.ids == b.boxes.ids
    np.testing.assert_array_equal(a.boxes.num_points, b.boxes.num_points)
    np.testing.assert_array_equal(a.boxes.difficulty, b.boxes.difficulty)
    np.testing.assert_array_equal(a.boxes.speed, b.boxes.speed)
    assert [lid.name for lid in a.rig.lidars] == [lid.name for lid in b.rig.lidars]
    for la, lb in zip(a.rig.lidars, b.rig.lidars, strict=True):
        np.testing.assert_allclose(la.inclinations, lb.inclinations, atol=1e-12)
        np.testing.assert_allclose(la.vehicle_from_lidar, lb.vehicle_from_lidar, atol=1e-12)
        assert la.columns == lb.columns
    for ca, cb in zip(a.rig.cameras, b.rig.cameras, strict=True):
        assert (ca.name, ca.width, ca.height, ca.fx, ca.k1) == (cb.name, cb.width, cb.height, cb.fx, cb.k1)


def test_round_trip(tmp_path, small) -> None:
    path = _waymo_file(tmp_path / "a.tfrecord", small, "segA", frames=2)
    records = [f.to_record() for f in WaymoV1Reader(path)]
    # NaN speed and an empty box list survive too
    records[1] = dataclasses.replace(records[1], boxes=records[1].boxes.select(np.zeros(6, bool)))
    speed = records[0].boxes.speed.copy()
    speed[0] = np.nan
    records[0] = dataclasses.replace(records[0], boxes=dataclasses.replace(records[0].boxes, speed=speed))
    write_records(tmp_path / "cache", "a", records, {"path": str(path)})
    write_records(tmp_path / "cache", "b", records[:1])
    cache = TrainingCache(tmp_path / "cache")
    assert len(cache) == 3
    assert cache.keys == (records[0].key, records[1].key, records[0].key)
    for i, ref in enumerate([records[0], records[1], records[0]]):
        _assert_same(cache[i], ref)
    _assert_same(cache[-1], records[0])
    got = cache[0].lidars["TOP"].points
    assert not got.flags.writeable  # a read-only view into the memory map
    with pytest.raises(IndexError):
        cache[3]
    clone = pickle.loads(pickle.dumps(cache))  # what a DataLoader worker gets
    _assert_same(clone[1], records[1])
    assert cache.index_of(records[1].key) == 1
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["frames"] == 3 and [s["name"] for s in index["shards"]] == ["a", "b"]


def test_missing_and_damaged_cache(tmp_path, small) -> None:
    with pytest.raises(DataError, match="no training cache here"):
        TrainingCache(tmp_path / "nothing")
    path = _waymo_file(tmp_path / "a.tfrecord", small, "segA", frames=1)
    write_records(tmp_path / "c", "a", [f.to_record() for f in WaymoV1Reader(path)])
    binary = tmp_path / "c" / "shards" / "a.bin"
    binary.write_bytes(binary.read_bytes()[:-100])
    cache = TrainingCache(tmp_path / "c")
    with pytest.raises(DataError, match=r"a\.bin: \d+ bytes but its metadata says \d+; the shard is damaged"):
        cache[0]
    # the index ignores a damaged shard when rebuilt
    assert write_index(tmp_path / "c")["frames"] == 0


def test_aborted_shard_leaves_nothing(tmp_path, small) -> None:
    path = _waymo_file(tmp_path / "a.tfrecord", small, "segA", frames=1)
    writer = ShardWriter(tmp_path / "c", "x")
    writer.add(next(iter(WaymoV1Reader(path))).to_record())
    writer.abort()
    assert list((tmp_path / "c" / "shards").iterdir()) == []


def test_convert_parallel_and_resume(tmp_path, small) -> None:
    src = tmp_path / "src"
    (src / "deeper").mkdir(parents=True)
    files = [
        _waymo_file(src / "s0.tfrecord", small, "s0"),
        _waymo_file(src / "deeper" / "s1.tfrecord", small, "s1"),
    ]
    out = tmp_path / "cache"
    summary = convert_waymo([src], out, workers=2)
    assert not summary.failed and summary.frames == 6
    assert all(not f.resumed for f in summary.files)
    cache = TrainingCache(out)
    assert len(cache) == 6 and {k.segment for k in cache.keys} == {"s0", "s1"}
    direct = [f.to_record() for f in WaymoV1Reader(files[1])]
    start = cache.index_of(direct[0].key)
    for i, ref in enumerate(direct):
        _assert_same(cache[start + i], ref)
    # a run killed mid-shard leaves a .partial temp (and maybe a .bin without .json): a rerun redoes that one
    name = shard_name(files[1])
    (out / "shards" / f"{name}.json").unlink()
    (out / "shards" / f".{name}.bin.123.partial").write_bytes(b"junk")
    summary = convert_waymo([src], out, workers=1)
    assert sorted((f.shard, f.resumed) for f in summary.files) == sorted(
        [(shard_name(files[0]), True), (name, False)]
    )
    assert len(TrainingCache(out)) == 6


def test_convert_reports_bad_files(tmp_path, small, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _waymo_file(src / "good.tfrecord", small, "good", frames=2)
    bad = _waymo_file(src / "bad.tfrecord", small, "bad", frames=3)
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    out = tmp_path / "cache"
    assert main(["convert", "waymo", str(src), str(out)]) == 2
    err = capsys.readouterr()
    assert "1 of 2 files failed" in err.err and "bad.tfrecord: record 1 at byte offset" in err.err
    assert len(TrainingCache(out)) == 2  # the good file's shard, nothing of the bad one
    assert not any(p.name.startswith(shard_name(bad)) for p in (out / "shards").iterdir())
    assert main(["convert", "waymo", str(src), str(out), "--skip-corrupt"]) == 0
    out_text = capsys.readouterr().out
    assert "1 already done" in out_text and "1 damaged records skipped" in out_text
    assert len(TrainingCache(out)) == 4
