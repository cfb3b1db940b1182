"""Bad Waymo input: each case is one clear DataError (file, record, offset) or a counted skip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from drivetl.data.formats._tfrecord import TFRecordWriter
from drivetl.data.formats.waymo import RangeImageData, WaymoV1Reader, WaymoWriter, build_frame
from drivetl.data.formats.waymo._reader import parse_frame
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.errors import DataError


@pytest.fixture(scope="module")
def small():
    return synthetic_frame(2, top_shape=(8, 40), side_shape=(6, 24))


def _good_bytes(small) -> bytes:
    record, range_images = small
    return build_frame(record, range_images).SerializeToString()


def _write(path, records: list[bytes]):
    with TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    return path


def test_truncated_file(tmp_path, small) -> None:
    good = _good_bytes(small)
    path = _write(tmp_path / "x.tfrecord", [good, good])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DataError, match=rf"x\.tfrecord: record 1 at byte offset {16 + len(good)}: truncated"):
        list(WaymoV1Reader(path))
    reader = WaymoV1Reader(path, skip_corrupt=True)
    assert len(list(reader)) == 1 and reader.skipped == 1


def test_flipped_byte(tmp_path, small) -> None:
    good = _good_bytes(small)
    path = _write(tmp_path / "flip.tfrecord", [good, good, good])
    raw = bytearray(path.read_bytes())
    raw[(16 + len(good)) + 12 + 1000] ^= 0x10  # record 1's data
    path.write_bytes(bytes(raw))
    with pytest.raises(
        DataError, match=rf"flip\.tfrecord: record 1 at byte offset {16 + len(good)}: data CRC"
    ):
        list(WaymoV1Reader(path))
    reader = WaymoV1Reader(path, skip_corrupt=True)
    frames = list(reader)
    assert len(frames) == 2 and reader.skipped == 1
    assert len(frames[1].points()) == len(frames[0].points()) > 0


def test_record_that_is_not_a_frame(tmp_path, small) -> None:
    good = _good_bytes(small)
    rng = np.random.default_rng(0)
    garbage = [b"\xff" * 40, rng.integers(0, 256, 500, dtype=np.uint8).tobytes(), b"\x08\x01"]
    for i, junk in enumerate(garbage):
        path = _write(tmp_path / f"junk{i}.tfrecord", [good, junk, good])
        with pytest.raises(
            DataError, match=rf"junk{i}\.tfrecord: record 1 at byte offset \d+: not a Waymo v1 Frame"
        ):
            list(WaymoV1Reader(path))
        reader = WaymoV1Reader(path, skip_corrupt=True)
        assert len(list(reader)) == 2 and reader.skipped == 1


def test_laser_without_calibration(tmp_path, small) -> None:
    record, range_images = small
    proto = build_frame(record, range_images)
    kept = [c for c in proto.context.laser_calibrations if c.name != 3]  # drop SIDE_LEFT's calibration
    del proto.context.laser_calibrations[:]
    proto.context.laser_calibrations.extend(kept)
    path = _write(tmp_path / "nocal.tfrecord", [proto.SerializeToString(), _good_bytes(small)])
    with pytest.raises(
        DataError,
        match=r"nocal\.tfrecord: record 0 at byte offset 0: laser SIDE_LEFT has range "
        r"images but the frame's context has no calibration",
    ):
        list(WaymoV1Reader(path))
    reader = WaymoV1Reader(path, skip_corrupt=True)
    assert len(list(reader)) == 1 and reader.skipped == 1


def test_damaged_range_image_payload(tmp_path, small) -> None:
    record, range_images = small
    proto = build_frame(record, range_images)
    proto.lasers[1].ri_return2.range_image_compressed = b"not zlib at all"
    path = _write(tmp_path / "zlib.tfrecord", [proto.SerializeToString()])
    frame = next(iter(WaymoV1Reader(path)))
    with pytest.raises(
        DataError,
        match=r"zlib\.tfrecord: record 0 at byte offset 0: laser FRONT return 2: "
        r"cannot decode",
    ):
        frame.points()


def test_inclination_count_mismatch(tmp_path, small) -> None:
    record, range_images = small
    proto = build_frame(record, range_images)
    top = next(c for c in proto.context.laser_calibrations if c.name == 1)
    del top.beam_inclinations[-1]
    path = _write(tmp_path / "inc.tfrecord", [proto.SerializeToString()])
    frame = next(iter(WaymoV1Reader(path)))
    with pytest.raises(
        DataError, match="laser TOP calibration has 7 beam inclinations but its range image has 8"
    ):
        frame.points()


def test_writer_rejects_what_waymo_cannot_hold(tmp_path, small) -> None:
    record, range_images = small
    bad_shape = dict(range_images)
    bad_shape["FRONT"] = RangeImageData("FRONT", range_images["FRONT"].range_image[:, :5])
    path = tmp_path / "w.tfrecord"
    with pytest.raises(
        DataError, match="laser FRONT range image is 5x24 but the rig says 6 beams x 24 columns"
    ):
        with WaymoWriter(path) as w:
            w.write(record, bad_shape)
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing half-written left behind
    boxes = dataclasses.replace(record.boxes, classes=("truck",) + record.boxes.classes[1:])
    with pytest.raises(DataError, match="box 0 has class 'truck'"):
        build_frame(dataclasses.replace(record, boxes=boxes), range_images)
    with pytest.raises(ValueError, match="per-pixel pose for the TOP laser only"):
        RangeImageData("FRONT", range_images["FRONT"].range_image, np.zeros((6, 24, 6), np.float32))


def test_index_checks_framing_and_first_frame_at_start_up(tmp_path, small) -> None:
    """The random-access index (what training and evaluation read through) walks headers with the
    length CRC and a bound, and parses the first record, so bad files fail before any worker starts."""
    import os
    import struct

    from drivetl.data.formats.waymo import WaymoRecordIndex

    good = _good_bytes(small)
    ok = _write(tmp_path / "ok.tfrecord", [good, good])
    index = WaymoRecordIndex([ok])
    assert len(index) == 2 and len(index[1].lidars) > 0
    # a 1 TB length field: refused by the length CRC before anything is allocated or sought
    huge = tmp_path / "huge.tfrecord"
    huge.write_bytes(struct.pack("<QI", 1 << 40, 0) + b"\0" * 64)
    with pytest.raises(DataError, match=r"huge\.tfrecord: record 0 at byte offset 0: length CRC mismatch"):
        WaymoRecordIndex([huge])
    # random bytes
    noise = tmp_path / "noise.tfrecord"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match=r"noise\.tfrecord: record 0 .*length CRC mismatch"):
        WaymoRecordIndex([noise])
    # a truncated last record is found by the header walk
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(ok.read_bytes()[:-100])
    message = rf"cut\.tfrecord: record 1 at byte offset {16 + len(good)}: truncated"
    with pytest.raises(DataError, match=message):
        WaymoRecordIndex([cut])
    # framed correctly, but not a Frame: caught at start-up by parsing the first record
    junk = _write(tmp_path / "junk.tfrecord", [b"\x08\x01hello", good])
    with pytest.raises(DataError, match=r"junk\.tfrecord: record 0 at byte offset 0"):
        WaymoRecordIndex([junk])


def test_empty_file_is_an_error(tmp_path) -> None:
    from drivetl.data.formats.waymo import WaymoRecordIndex

    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.tfrecord: empty file"):
        list(WaymoV1Reader(empty))
    with pytest.raises(DataError, match=r"empty\.tfrecord: no records"):
        WaymoRecordIndex([empty])


def test_record_key_reads_the_head_of_the_record_only(tmp_path, small, monkeypatch) -> None:
    """`WaymoRecordIndex.record_key` gives `index[i].key` from the record's first bytes, decoding no
    range image and parsing no Frame; a context larger than the prefix falls back to a proto parse."""
    import drivetl.data.formats.waymo._index as index_module
    from drivetl.data.formats.waymo import WaymoRecordIndex, WaymoWriter

    record, ri = small
    path = tmp_path / "keys.tfrecord"
    names = ["seg_a", "séquence_ü", "seg_a"]
    with WaymoWriter(path) as w:
        for i, name in enumerate(names):
            key = dataclasses.replace(record.key, segment=name, timestamp_us=1_000_000 + 7 * i)
            w.write(dataclasses.replace(record, key=key), ri)
    index = WaymoRecordIndex([path])
    want = [index[i].key for i in range(len(index))]
    assert [k.segment for k in want] == names and len({k.timestamp_us for k in want}) == 3

    def no_parse(*args, **kwargs):
        raise AssertionError("the key must come from the record's head, not a Frame parse")

    with monkeypatch.context() as m:
        m.setattr(index_module, "parse_frame", no_parse)
        m.setattr(index_module, "WaymoFrame", no_parse)
        assert [index.record_key(i) for i in range(len(index))] == want
    parsed = []
    with monkeypatch.context() as m:
        m.setattr(index_module, "KEY_PREFIX_BYTES", 40)  # shorter than the context: the fallback
        m.setattr(index_module, "parse_frame", lambda d, where: parsed.append(where) or parse_frame(d, where))
        assert [index.record_key(i) for i in range(len(index))] == want
    assert len(parsed) == 3 and "keys.tfrecord: record 2 at byte offset" in parsed[2]
