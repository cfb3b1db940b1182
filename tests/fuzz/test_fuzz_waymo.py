"""Fuzzing the Waymo readers: v1 TFRecords and frames, v2 Parquet folders. Mutated copies of a valid
file give a result or a `DrivetlError` within bounded memory and time (the harness:
`tests/fuzz/_harness.py`)."""

from __future__ import annotations

import dataclasses

from hypothesis import given

from tests.fuzz._harness import FUZZ, fuzz_folder, mutated, run_case


def _waymo_bytes() -> bytes:
    from drivetl.data.formats.waymo import build_frame
    from drivetl.data.formats.waymo._synthetic import synthetic_frame

    record, images = synthetic_frame(2, top_shape=(8, 40), side_shape=(6, 24))
    return build_frame(record, images).SerializeToString()


WAYMO = _waymo_bytes()


def _tfrecord(payloads: list[bytes]) -> bytes:
    from drivetl.data.formats._tfrecord import frame_record

    return b"".join(frame_record(p) for p in payloads)


@FUZZ
@given(data=mutated(_tfrecord([WAYMO, WAYMO])))
def test_tfrecord_and_waymo_reader(tmp_path_factory, data: bytes) -> None:
    from drivetl.data.formats.waymo import WaymoRecordIndex, WaymoV1Reader

    path = tmp_path_factory.mktemp("tf") / "x.tfrecord"
    path.write_bytes(data)

    def read_all():
        for frame in WaymoV1Reader(path, threads=1):
            frame.points()
            frame.to_record()

    run_case(read_all, size=len(data))
    run_case(lambda: [r for r in WaymoRecordIndex([path])], size=len(data))


@FUZZ
@given(data=mutated(WAYMO))
def test_waymo_frame_decoding(data: bytes) -> None:
    from drivetl.data.formats.waymo import WaymoFrame
    from drivetl.data.formats.waymo._reader import parse_frame

    def decode():
        frame = WaymoFrame(parse_frame(data, "record"), where="record", threads=1)
        frame.points()
        frame.to_record()

    run_case(decode, size=len(data))


# ------------------------------------------------------------------------------- Waymo v2 Parquet


def test_waymo_v2_folders(tmp_path_factory) -> None:
    """Mutated bytes of one component file of a two-frame Waymo v2 folder."""
    from drivetl.data.formats.waymo import WaymoV2RecordIndex, WaymoV2Writer, _v2_files
    from drivetl.data.formats.waymo._synthetic import synthetic_frame
    from drivetl.data.records import FrameKey

    root = tmp_path_factory.mktemp("v2") / "v2"
    record, range_images = synthetic_frame(1, top_shape=(8, 40), side_shape=(6, 24))
    with WaymoV2Writer(root) as w:
        for i in range(2):
            w.write(dataclasses.replace(record, key=FrameKey("seg", 1000 + 100_000 * i)), range_images)
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}

    def read() -> int:
        _v2_files.forget_open_files()
        index = WaymoV2RecordIndex(root)
        return sum(len(index[i].lidars) > 0 for i in range(len(index)))

    fuzz_folder(root, files, read, 2)
