"""Waymo's zlib streams through libdeflate and through zlib: same bytes, same points, same errors,
and standard streams from the writer."""

from __future__ import annotations

import sys
import zlib

import numpy as np
import pytest

from drivetl.data.formats.waymo import WaymoV1Reader, WaymoWriter, _zlib, build_frame, parse_frame
from drivetl.data.formats.waymo._matrix import (
    compress_matrix_float,
    parse_matrix,
    serialize_matrix_float,
)
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.errors import BackendUnavailableError, DataError

#: libdeflate is a dependency; these tests compare it with zlib, so they need it installed.
needs_deflate = pytest.mark.skipif(not _zlib.libdeflate_available(), reason="the deflate package is absent")


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    _zlib.set_backend("auto")


@pytest.fixture(scope="module")
def frame_blobs():
    record, range_images = synthetic_frame(3, top_shape=(16, 300), side_shape=(20, 60))
    proto = build_frame(record, range_images)
    blobs = []
    for laser in proto.lasers:
        for ri in (laser.ri_return1, laser.ri_return2):
            fields = ("range_image_compressed", "range_image_pose_compressed", "camera_projection_compressed")
            blobs += [bytes(getattr(ri, f)) for f in fields if getattr(ri, f)]
    assert len(blobs) == 5 * 2 * 2 + 1  # range images and camera projections of 5 lasers x 2, TOP pose
    return record, range_images, proto, blobs


@needs_deflate
def test_libdeflate_inflates_the_same_bytes(frame_blobs, monkeypatch) -> None:
    import deflate

    calls = []
    real = deflate.zlib_decompress
    monkeypatch.setattr(deflate, "zlib_decompress", lambda b, n: calls.append(n) or real(b, n))
    *_, blobs = frame_blobs
    for blob in blobs:
        expected = zlib.decompress(blob)
        assert bytes(_zlib.inflate(blob, backend_name="libdeflate")) == expected
        assert _zlib.inflate(blob, backend_name="zlib") == expected
        bound = _zlib.matrix_size_bound(blob)
        assert bound is not None and len(expected) <= bound <= len(expected) + 256
    # every float matrix went through libdeflate (int32 camera projections too: their data field
    # is packed varints under the same tag)
    assert len(calls) == len(blobs)


@needs_deflate
def test_decoded_points_identical_with_either_backend(tmp_path) -> None:
    record, range_images = synthetic_frame(4, top_shape=(16, 300), side_shape=(20, 60))
    path = tmp_path / "a.tfrecord"
    with WaymoWriter(path) as w:
        w.write(record, range_images)
    out = {}
    for name in ("libdeflate", "zlib"):
        assert _zlib.set_backend(name) == name
        frame = next(iter(WaymoV1Reader(path, threads=2)))
        out[name] = frame.point_features()
    assert out["zlib"].shape[0] > 1000
    assert out["libdeflate"].tobytes() == out["zlib"].tobytes()


def test_fallback_without_deflate(tmp_path, monkeypatch, frame_blobs) -> None:
    """Without the `deflate` package: auto resolves to zlib, an explicit libdeflate raises."""
    monkeypatch.setitem(sys.modules, "deflate", None)  # `import deflate` now raises ImportError
    monkeypatch.setattr(_zlib, "_deflate", None)
    assert not _zlib.libdeflate_available()
    assert _zlib.set_backend("auto") == "zlib"
    *_, blobs = frame_blobs
    assert _zlib.inflate(blobs[0]) == zlib.decompress(blobs[0])
    record, range_images = synthetic_frame(5, top_shape=(8, 40), side_shape=(6, 24))
    path = tmp_path / "z.tfrecord"
    with WaymoWriter(path) as w:  # the writer compresses through zlib
        w.write(record, range_images)
    pts = next(iter(WaymoV1Reader(path))).points()
    n = sum(int((ri.range_image[..., 0] > 0).sum()) for ri in range_images.values())
    assert pts.shape == (n, 3)
    with pytest.raises(BackendUnavailableError, match="pip install deflate"):
        _zlib.set_backend("libdeflate")


@pytest.mark.parametrize("name", [pytest.param("libdeflate", marks=needs_deflate), "zlib"])
def test_writer_emits_standard_zlib_streams(tmp_path, name) -> None:
    _zlib.set_backend(name)
    record, range_images = synthetic_frame(6, top_shape=(8, 40), side_shape=(6, 24))
    path = tmp_path / f"{name}.tfrecord"
    with WaymoWriter(path) as w:
        w.write(record, range_images)
    frame = next(iter(WaymoV1Reader(path)))
    for laser in frame.proto.lasers:
        from drivetl.data.formats.waymo._names import LASER_NAMES

        data = range_images[LASER_NAMES[laser.name - 1]]
        for ret, ri in enumerate((laser.ri_return1, laser.ri_return2)):
            inflated = zlib.decompress(ri.range_image_compressed)  # Python's own zlib reads it
            assert inflated == serialize_matrix_float(data.range_image[ret])
        if laser.name == 1:
            pose = parse_matrix(zlib.decompress(laser.ri_return1.range_image_pose_compressed), "<f4")
            np.testing.assert_array_equal(pose, data.pixel_pose)


@needs_deflate
def test_damaged_streams_fail_as_with_zlib(frame_blobs) -> None:
    *_, blobs = frame_blobs
    blob = blobs[0]
    truncated = blob[: len(blob) // 2]
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    for bad in (truncated, bytes(flipped), blob[:-1] + bytes([blob[-1] ^ 1]), b"not zlib at all"):
        with pytest.raises(zlib.error) as from_zlib:
            zlib.decompress(bad)
        with pytest.raises(zlib.error) as ours:
            _zlib.inflate(bad, backend_name="libdeflate")
        assert str(ours.value) == str(from_zlib.value)


@needs_deflate
def test_streams_the_header_does_not_size() -> None:
    """Matrices whose first field is not the data, or whose shape field outgrows the allowance,
    still inflate to zlib's bytes (the zlib path decides)."""
    data = np.arange(12, dtype="<f4").reshape(3, 4)
    packed = serialize_matrix_float(data)
    split = 2 + data.nbytes  # tag, length, data
    assert packed[split] == 0x12
    shape_first = packed[split:] + packed[:split]
    dims = b"\x08\x80\x80\x80\x80\x01" * 60  # 360 bytes of shape: more than the allowance
    long_shape = b"\x0a\x04" + np.float32(1).tobytes() + b"\x12\xe8\x02" + dims
    for raw in (shape_first, long_shape):
        blob = zlib.compress(raw)
        assert bytes(_zlib.inflate(blob, backend_name="libdeflate")) == raw
    assert _zlib.matrix_size_bound(zlib.compress(shape_first)) is None
    assert parse_matrix(_zlib.inflate(zlib.compress(shape_first)), "<f4").tolist() == data.tolist()
    # a header claiming more than DEFLATE can expand to is not trusted with an allocation
    lying = zlib.compress(b"\x0a\xff\xff\xff\xff\x0f" + bytes(8))
    assert _zlib.matrix_size_bound(lying) is None


@needs_deflate
def test_damaged_range_image_names_the_record(tmp_path, frame_blobs) -> None:
    _, _, proto, _ = frame_blobs
    damaged = parse_frame(proto.SerializeToString(), "x")
    blob = bytearray(damaged.lasers[0].ri_return1.range_image_compressed)
    blob[len(blob) // 2] ^= 0xFF
    damaged.lasers[0].ri_return1.range_image_compressed = bytes(blob)
    from drivetl.data.formats._tfrecord import TFRecordWriter

    path = tmp_path / "bad.tfrecord"
    with TFRecordWriter(path) as w:
        w.write(damaged.SerializeToString())
    _zlib.set_backend("libdeflate")
    frame = next(iter(WaymoV1Reader(path)))
    with pytest.raises(DataError, match=r"bad\.tfrecord: record 0 at byte offset 0: laser TOP return 1: "):
        frame.points()


@needs_deflate
def test_compress_levels() -> None:
    raw = serialize_matrix_float(np.zeros((4, 5, 4), np.float32))
    for name in ("libdeflate", "zlib"):
        for level in (0, 1, 6, 9):
            assert zlib.decompress(_zlib.compress(raw, level, backend_name=name)) == raw
    with pytest.raises(Exception, match="level 12"):
        _zlib.compress(raw, 12)
    assert zlib.decompress(compress_matrix_float(np.ones((2, 2)))) == serialize_matrix_float(np.ones((2, 2)))
