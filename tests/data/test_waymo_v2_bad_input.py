"""Bad Waymo v2 folders: each fails with one line naming the file, the component and the key."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drivetl.data.formats.waymo import WaymoV2Reader, WaymoV2Writer, _v2_files
from drivetl.data.formats.waymo import _v2_schema as S
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.data.records import FrameKey
from drivetl.errors import DataError

T0, DT = 1000, 100_000


@pytest.fixture(autouse=True)
def _fresh_files():
    _v2_files.forget_open_files()
    yield
    _v2_files.forget_open_files()


def _dataset(root, segments=("seg",), frames: int = 3):
    record, range_images = synthetic_frame(1, top_shape=(8, 40), side_shape=(6, 24))
    with WaymoV2Writer(root) as w:
        for seg in segments:
            for i in range(frames):
                w.write(dataclasses.replace(record, key=FrameKey(seg, T0 + DT * i)), range_images)
    return root


def _rewrite(path, table, *, one_row_group_per_frame: bool = True) -> None:
    """Write `table` back to `path`, one row group per frame (or all in one)."""
    with pq.ParquetWriter(path, table.schema) as w:
        if not one_row_group_per_frame:
            w.write_table(table)
            return
        for t in sorted(set(table.column(S.TIMESTAMP).to_pylist())):
            import pyarrow.compute as pc

            w.write_table(table.filter(pc.equal(table.column(S.TIMESTAMP), t)))


def _replace(table, name: str, array):
    return table.set_column(table.schema.get_field_index(name), name, array)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_component_file(tmp_path) -> None:
    root = _dataset(tmp_path, segments=("a", "b"))
    (root / S.LIDAR_BOX / "b.parquet").unlink()
    with pytest.raises(DataError) as exc:
        WaymoV2Reader(root)
    msg = _one_line(exc)
    assert str(root / S.LIDAR_BOX / "b.parquet") in msg
    assert "component lidar_box of segment b" in msg and "other segments have lidar_box files" in msg


def test_missing_required_component(tmp_path) -> None:
    root = _dataset(tmp_path)
    for p in (root / S.LIDAR).iterdir():
        p.unlink()
    (root / S.LIDAR).rmdir()
    with pytest.raises(DataError, match=r"lidar/seg\.parquet: missing: component lidar of segment seg"):
        WaymoV2Reader(root)


@pytest.mark.parametrize("layout", ["row group per frame", "one row group"])
def test_frame_missing_from_one_component(tmp_path, layout) -> None:
    """lidar lacks frame 1: found from the footer when each frame has its row groups, else when the
    frame is read; the message is the same either way."""
    root = _dataset(tmp_path)
    path = root / S.LIDAR / "seg.parquet"
    table = pq.read_table(path)
    import pyarrow.compute as pc

    table = table.filter(pc.not_equal(table.column(S.TIMESTAMP), T0 + DT))
    _rewrite(path, table, one_row_group_per_frame=layout == "row group per frame")
    expected = (
        rf"{path}: component lidar, segment seg, frame {T0 + DT}: no rows for this frame although "
        "the segment's vehicle_pose lists it"
    )
    if layout == "row group per frame":
        with pytest.raises(DataError, match=expected) as exc:
            WaymoV2Reader(root)
    else:
        reader = WaymoV2Reader(root)
        assert len(reader[0].points()) > 0 and len(reader[2].points()) > 0
        with pytest.raises(DataError, match=expected) as exc:
            reader[1].points()
    _one_line(exc)


def test_frame_missing_from_vehicle_pose(tmp_path) -> None:
    root = _dataset(tmp_path)
    path = root / S.VEHICLE_POSE / "seg.parquet"
    table = pq.read_table(path).slice(0, 2)
    _rewrite(path, table)
    with pytest.raises(
        DataError,
        match=rf"{path}: component vehicle_pose, segment seg, frame {T0 + 2 * DT}: no rows for this frame "
        "although the segment's lidar has it",
    ):
        WaymoV2Reader(root)


def test_wrong_column_type(tmp_path) -> None:
    root = _dataset(tmp_path)
    path = root / S.VEHICLE_POSE / "seg.parquet"
    table = pq.read_table(path)
    as_text = pa.array([str(v) for v in table.column(S.WORLD_FROM_VEHICLE).to_pylist()])
    table = _replace(table, S.WORLD_FROM_VEHICLE, as_text)
    _rewrite(path, table)
    reader = WaymoV2Reader(root)
    with pytest.raises(DataError) as exc:
        reader[0].world_from_vehicle  # noqa: B018
    msg = _one_line(exc)
    assert msg.startswith(f"{path}: component vehicle_pose, segment seg, frame {T0}: column ")
    assert f"'{S.WORLD_FROM_VEHICLE}' holds string, expected a list of floats (16 values)" in msg


def test_wrong_key_type_found_at_open(tmp_path) -> None:
    root = _dataset(tmp_path)
    path = root / S.LIDAR / "seg.parquet"
    table = pq.read_table(path)
    idx = table.schema.get_field_index(S.TIMESTAMP)
    table = table.set_column(idx, S.TIMESTAMP, table.column(S.TIMESTAMP).cast(pa.float64()))
    with pq.ParquetWriter(path, table.schema) as w:
        w.write_table(table)
    with pytest.raises(
        DataError,
        match=rf"{path}: component lidar, segment seg: column '{S.TIMESTAMP}' holds double, expected an int",
    ):
        WaymoV2Reader(root)


def test_missing_column(tmp_path) -> None:
    root = _dataset(tmp_path)
    path = root / S.LIDAR / "seg.parquet"
    table = pq.read_table(path).drop_columns([S.RANGE_IMAGE[2][0]])
    _rewrite(path, table)
    with pytest.raises(
        DataError,
        match=rf"{path}: component lidar, segment seg, frame {T0}: no column '\[LiDARComponent\]"
        r"\.range_image_return2\.values'; is this a Waymo v2 lidar file\?",
    ):
        WaymoV2Reader(root)[0].points()


def test_values_disagree_with_shape(tmp_path) -> None:
    root = _dataset(tmp_path)
    path = root / S.LIDAR / "seg.parquet"
    table = pq.read_table(path)
    col = S.RANGE_IMAGE[1][1]
    shapes = [[h, w + 1, c] for h, w, c in table.column(col).to_pylist()]
    table = _replace(table, col, pa.array(shapes, pa.list_(pa.int32(), 3)))
    _rewrite(path, table)
    with pytest.raises(
        DataError, match=rf"{path}: component lidar, segment seg, frame {T0}: laser TOP return 1: .* shape"
    ):
        WaymoV2Reader(root)[0].points()


def test_not_parquet_and_foreign_segment(tmp_path) -> None:
    root = _dataset(tmp_path, segments=("a", "b"))
    bad = root / S.LIDAR_BOX / "a.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"{bad}: component lidar_box, segment a: not a readable Parquet"):
        WaymoV2Reader(root)
    # segment b's camera_image file copied over segment a's: rows of another segment
    _dataset(tmp_path, segments=("a",))
    (root / S.CAMERA_IMAGE / "a.parquet").write_bytes((root / S.CAMERA_IMAGE / "b.parquet").read_bytes())
    _v2_files.forget_open_files()
    reader = WaymoV2Reader(root)
    expected = r"camera_image/a\.parquet: component camera_image, segment a, frame .*: holds rows of segment"
    with pytest.raises(DataError, match=expected):
        reader[0].images  # noqa: B018


def test_not_a_v2_folder(tmp_path) -> None:
    (tmp_path / "lidar").mkdir()
    with pytest.raises(DataError, match="not a Waymo v2 dataset folder.*found only empty lidar"):
        WaymoV2Reader(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        WaymoV2Reader(tmp_path / "nope")


def test_skip_corrupt_counts_damaged_frames(tmp_path) -> None:
    root = _dataset(tmp_path)
    path = root / S.LIDAR / "seg.parquet"
    table = pq.read_table(path)
    import pyarrow.compute as pc

    table = table.filter(pc.not_equal(table.column(S.TIMESTAMP), T0 + DT))
    _rewrite(path, table, one_row_group_per_frame=False)
    reader = WaymoV2Reader(root, skip_corrupt=True)
    assert [f.key.timestamp_us for f in reader] == [T0, T0 + 2 * DT] and reader.skipped == 1


def test_a_damaged_data_page_is_one_line(tmp_path) -> None:
    """Bytes overwritten in the first data page of the camera calibration file (its footer intact):
    pyarrow's OSError while reading the rows used to escape."""
    from drivetl.data.formats.waymo import WaymoV2RecordIndex

    root = _dataset(tmp_path, frames=2)
    path = root / S.CAMERA_CALIBRATION / "seg.parquet"
    raw = bytearray(path.read_bytes())
    raw[4:40] = b"\xff" * 36  # after the leading magic: the first page header
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        WaymoV2RecordIndex(root)[0]
    text = _one_line(info)
    assert f"{path}: component {S.CAMERA_CALIBRATION}, segment seg" in text, text
    assert "unreadable rows" in text, text
