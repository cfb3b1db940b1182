"""Waymo v2 folders through the commands and the data pipeline: `drivetl info`, `drivetl convert
waymo`, `open_source` (what pretraining, evaluation and prediction read)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from drivetl.cli import main
from drivetl.data.cache import TrainingCache
from drivetl.data.dataset import open_source
from drivetl.data.formats.waymo import (
    WaymoV1Reader,
    WaymoV2RecordIndex,
    WaymoV2Writer,
    WaymoWriter,
    _v2_files,
)
from drivetl.data.formats.waymo import _v2_schema as S
from drivetl.data.formats.waymo._convert import convert_waymo, find_sources
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.data.records import FrameKey


@pytest.fixture(autouse=True)
def _fresh_files():
    _v2_files.forget_open_files()
    yield
    _v2_files.forget_open_files()


@pytest.fixture
def both(tmp_path):
    """The same 2 + 3 frames (two segments) as a v1 file and a v2 folder."""
    record, range_images = synthetic_frame(6, top_shape=(8, 40), side_shape=(6, 24))
    v1, v2 = tmp_path / "v1.tfrecord", tmp_path / "v2"
    with WaymoWriter(v1) as w1, WaymoV2Writer(v2) as w2:
        for seg, n in (("sa", 2), ("sb", 3)):
            for i in range(n):
                rec = dataclasses.replace(record, key=FrameKey(seg, 10 + i))
                w1.write(rec, range_images)
                w2.write(rec, range_images)
    return v1, v2, range_images


def test_info_on_a_v2_folder(both, capsys) -> None:
    v1, v2, range_images = both
    assert main(["info", str(v1)]) == 0
    v1_lines = capsys.readouterr().out.splitlines()
    assert main(["info", str(v2)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"folder: {v2} (")
    assert "frames: 5 in 2 segment(s)" in out
    n1 = int((range_images["TOP"].range_image[0, ..., 0] > 0).sum()) * 5
    assert f"laser TOP: range image 8x40; points return 1: {n1:,}," in out
    assert out.splitlines()[1:] == v1_lines[1:]  # everything but the size line says the same
    # a frame missing from the lidar file: the first frame of sb stops info with one line; --check counts it
    path = v2 / S.LIDAR / "sb.parquet"
    table = pq.read_table(path)
    table = table.filter(pc.not_equal(table.column(S.TIMESTAMP), 10))
    pq.write_table(table, path)  # one row group: found when the frame is read
    _v2_files.forget_open_files()
    assert main(["info", str(v2)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: component lidar, segment sb, frame 10: no rows for this frame" in err
    assert main(["info", str(v2), "--check"]) == 1
    out = capsys.readouterr().out
    assert "frames: 4 in 2 segment(s)" in out and "check: 1 damaged frame(s)" in out


def test_convert_a_v2_folder(both, tmp_path, capsys) -> None:
    v1, v2, _ = both
    sources = find_sources([v2])
    assert [(s.path, s.segment) for s in sources] == [(v2, "sa"), (v2, "sb")]
    out = tmp_path / "cache"
    assert main(["convert", "waymo", str(v2), str(out)]) == 0
    assert "converted 2 files (5 frames" in capsys.readouterr().out
    cache = TrainingCache(out)
    assert len(cache) == 5
    for frame in WaymoV1Reader(v1):
        ref = frame.to_record()
        got = cache[cache.index_of(ref.key)]
        for name in ref.lidars:
            np.testing.assert_array_equal(got.lidars[name].points, ref.lidars[name].points)
        np.testing.assert_array_equal(got.boxes.boxes, ref.boxes.boxes)
    summary = convert_waymo([v2], out)  # a rerun resumes
    assert [f.resumed for f in summary.files] == [True, True]
    (v2 / S.LIDAR_BOX / "sb.parquet").unlink()
    summary = convert_waymo([v2], tmp_path / "cache2")
    assert [bool(f.error) for f in summary.files] == [False, True]
    assert "lidar_box/sb.parquet: missing: component lidar_box of segment sb" in summary.failed[0].error


def test_open_source_reads_v2_like_v1(both) -> None:
    v1, v2, _ = both
    source = open_source(v2)
    assert isinstance(source, WaymoV2RecordIndex) and len(source) == 5
    assert isinstance(open_source(v2, "waymo-v2"), WaymoV2RecordIndex)
    reference = open_source(v1)
    for i in range(5):
        a, b = reference[i], source[i]
        assert a.key == b.key
        for name in a.lidars:
            np.testing.assert_array_equal(a.lidars[name].points, b.lidars[name].points)
        np.testing.assert_array_equal(a.world_from_vehicle, b.world_from_vehicle)


def test_check_reads_a_v2_folder(both) -> None:
    from drivetl.data.check import open_records

    v1, v2, _ = both
    got = list(open_records(v2, max_frames=3))
    ref = list(open_records(v1, max_frames=3))
    assert [r.key for r in got] == [r.key for r in ref]
    for a, b in zip(ref, got, strict=True):
        for name in a.lidars:
            np.testing.assert_array_equal(a.lidars[name].points, b.lidars[name].points)
