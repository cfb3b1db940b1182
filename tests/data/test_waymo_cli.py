"""`drivetl info`: what a file holds; --check counts damaged records."""

from __future__ import annotations

import dataclasses

from drivetl.cli import main
from drivetl.data.formats.waymo import WaymoWriter
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.data.records import FrameKey


def _file(path, frames: int = 2):
    record, range_images = synthetic_frame(6, top_shape=(8, 40), side_shape=(6, 24))
    with WaymoWriter(path) as w:
        for i in range(frames):
            w.write(dataclasses.replace(record, key=FrameKey("seg", 10 + i)), range_images)
    return path, record, range_images


def test_info_prints_contents(tmp_path, capsys) -> None:
    path, record, range_images = _file(tmp_path / "a.tfrecord")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "frames: 2 in 1 segment(s)" in out
    n1 = int((range_images["TOP"].range_image[0, ..., 0] > 0).sum()) * 2
    n2 = int((range_images["TOP"].range_image[1, ..., 0] > 0).sum()) * 2
    assert f"laser TOP: range image 8x40; points return 1: {n1:,}, return 2: {n2:,}" in out
    assert "camera FRONT: 64x48" in out
    assert "labels: vehicle 4, pedestrian 4, cyclist 2, sign 2" in out
    assert main(["info", str(path), "--check"]) == 0
    assert "all CRCs verified" in capsys.readouterr().out


def test_info_check_counts_damage(tmp_path, capsys) -> None:
    path, _, _ = _file(tmp_path / "b.tfrecord", frames=3)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    assert main(["info", str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "frames: 2" in out and "check: 1 damaged record(s)" in out
    # without --check the first damaged record stops it with one clear line
    assert main(["info", str(path)]) == 2
    assert "b.tfrecord: record 1 at byte offset" in capsys.readouterr().err
