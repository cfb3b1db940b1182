"""PointCloud2 decoding over the field layouts real drivers publish (built from the message spec)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from drivetl.data.formats.bag import decode_pointcloud2
from drivetl.data.formats.bag._pointcloud2 import DATATYPE_CODES
from drivetl.errors import DataError

STAMP_S = 1_700_000_000.25


def cloud(dtype: np.dtype, values: dict, *, height: int = 1, big: bool = False, row_pad: int = 0):
    """A PointCloud2-like message packing `values` with the structured `dtype` (its offsets, itemsize)."""
    n = len(next(iter(values.values())))
    dt = dtype.newbyteorder(">") if big else dtype
    arr = np.zeros(n, dtype=dt)
    for k, v in values.items():
        arr[k] = v
    width = n // height
    rows = arr.tobytes()
    step = dt.itemsize * width
    if row_pad:
        rows = b"".join(rows[i * step : (i + 1) * step] + b"\xee" * row_pad for i in range(height))
    fields = []
    for name in dt.names:
        sub, off = dt.fields[name][:2]
        base = sub.base if sub.shape else sub
        fields.append(
            NS(
                name=name,
                offset=off,
                datatype=DATATYPE_CODES[base.str[1:]],
                count=sub.shape[0] if sub.shape else 1,
            )
        )
    return NS(
        height=height,
        width=width,
        fields=fields,
        is_bigendian=big,
        point_step=dt.itemsize,
        row_step=step + row_pad,
        data=np.frombuffer(rows, np.uint8),
        is_dense=False,
    )


def layout(spec: list[tuple[str, str, int]], itemsize: int) -> np.dtype:
    return np.dtype(
        {
            "names": [s[0] for s in spec],
            "formats": ["<" + s[1] for s in spec],
            "offsets": [s[2] for s in spec],
            "itemsize": itemsize,
        }
    )


RNG = np.random.default_rng(0)
N = 50
XYZ = RNG.uniform(-50, 50, (N, 3)).astype(np.float32)
RING = RNG.integers(0, 32, N)
REL = np.sort(RNG.uniform(0, 0.1, N))


def xyz_dict():
    return {"x": XYZ[:, 0], "y": XYZ[:, 1], "z": XYZ[:, 2]}


def test_velodyne_layout_ring_and_float_time():
    dt = layout(
        [
            ("x", "f4", 0),
            ("y", "f4", 4),
            ("z", "f4", 8),
            ("intensity", "f4", 16),
            ("ring", "u2", 20),
            ("time", "f4", 24),
        ],
        32,
    )
    msg = cloud(dt, {**xyz_dict(), "intensity": np.arange(N), "ring": RING, "time": REL})
    out = decode_pointcloud2(msg, stamp_s=STAMP_S)
    assert out.columns == ("x", "y", "z", "intensity", "time", "laser_id")
    np.testing.assert_array_equal(out.points[:, :3], XYZ)
    np.testing.assert_array_equal(out.points[:, 3], np.arange(N))
    np.testing.assert_allclose(out.points[:, 4], REL, atol=1e-7)
    np.testing.assert_array_equal(out.points[:, 5], RING)


def test_ouster_layout_nanosecond_t_and_extra_fields_kept():
    dt = layout(
        [
            ("x", "f4", 0),
            ("y", "f4", 4),
            ("z", "f4", 8),
            ("intensity", "f4", 16),
            ("t", "u4", 20),
            ("reflectivity", "u2", 24),
            ("ring", "u2", 26),
            ("ambient", "u2", 28),
            ("range", "u4", 32),
        ],
        48,
    )
    t_ns = np.rint(REL * 1e9).astype(np.uint32)
    msg = cloud(
        dt,
        {
            **xyz_dict(),
            "intensity": 7.5,
            "t": t_ns,
            "reflectivity": 300,
            "ring": RING,
            "ambient": 12,
            "range": 5000,
        },
    )
    out = decode_pointcloud2(msg, stamp_s=STAMP_S)
    assert out.columns == (
        "x",
        "y",
        "z",
        "intensity",
        "time",
        "laser_id",
        "reflectivity_raw",
        "ambient",
        "range",
    )
    np.testing.assert_allclose(out.points[:, 4], t_ns * 1e-9, rtol=1e-6)
    assert (out.points[:, 6] == 300).all() and (out.points[:, 8] == 5000).all()


def test_hesai_layout_absolute_timestamp_becomes_relative():
    dt = layout(
        [
            ("x", "f4", 0),
            ("y", "f4", 4),
            ("z", "f4", 8),
            ("intensity", "f4", 12),
            ("timestamp", "f8", 16),
            ("ring", "u2", 24),
        ],
        32,
    )
    msg = cloud(dt, {**xyz_dict(), "intensity": 3, "timestamp": STAMP_S + REL, "ring": RING})
    out = decode_pointcloud2(msg, stamp_s=STAMP_S)
    np.testing.assert_allclose(out.points[:, out.columns.index("time")], REL, atol=1e-6)


def test_livox_layout_uint8_intensity_line_and_absolute_ns_timestamp():
    dt = layout(
        [
            ("x", "f4", 0),
            ("y", "f4", 4),
            ("z", "f4", 8),
            ("intensity", "u1", 12),
            ("tag", "u1", 13),
            ("line", "u1", 14),
            ("timestamp", "f8", 16),
        ],
        24,
    )
    ns = int(STAMP_S * 1e9) + np.rint(REL * 1e9)
    msg = cloud(dt, {**xyz_dict(), "intensity": 200, "tag": 16, "line": RING % 6, "timestamp": ns})
    out = decode_pointcloud2(msg, stamp_s=STAMP_S)
    assert out.columns == ("x", "y", "z", "intensity", "time", "laser_id", "tag")
    np.testing.assert_allclose(out.points[:, 4], REL, atol=1e-6)
    assert (out.points[:, 3] == 200).all()


def test_float64_xyz_uint16_intensity_big_endian_and_padding_decode_the_same():
    dt = layout([("x", "f8", 0), ("y", "f8", 8), ("z", "f8", 16), ("intensity", "u2", 24)], 40)
    vals = {**xyz_dict(), "intensity": np.arange(N) * 1000}
    little = decode_pointcloud2(cloud(dt, vals, height=2, row_pad=8))
    big = decode_pointcloud2(cloud(dt, vals, height=2, big=True, row_pad=8))
    np.testing.assert_array_equal(little.points, big.points)
    np.testing.assert_array_equal(little.points[:, :3], XYZ)
    assert little.points[-1, 3] == (N - 1) * 1000


def test_organized_cloud_drops_nan_and_origin_points():
    dt = layout([("x", "f4", 0), ("y", "f4", 4), ("z", "f4", 8), ("intensity", "f4", 12)], 16)
    xyz = XYZ.copy()
    xyz[3] = np.nan
    xyz[7] = 0.0
    msg = cloud(dt, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": 1.0}, height=5)
    out = decode_pointcloud2(msg)
    assert len(out.points) == N - 2 and out.dropped_points == 2
    assert np.isfinite(out.points).all()


def test_no_intensity_field_is_reported_and_field_map_picks_another():
    dt = layout(
        [("x", "f4", 0), ("y", "f4", 4), ("z", "f4", 8), ("vrad", "f4", 12), ("amplitude", "f4", 16)], 20
    )
    msg = cloud(dt, {**xyz_dict(), "vrad": -1.0, "amplitude": 42.0})
    plain = decode_pointcloud2(msg)
    assert (plain.points[:, 3] == 0).all() and any("intensity" in n for n in plain.dropped_fields)
    mapped = decode_pointcloud2(msg, field_map={"intensity": "amplitude"})
    assert (mapped.points[:, 3] == 42).all() and mapped.columns == ("x", "y", "z", "intensity", "vrad")


def test_multi_count_field_is_reported_not_kept():
    dt = np.dtype(
        {
            "names": ["x", "y", "z", "normal"],
            "formats": ["<f4", "<f4", "<f4", ("<f4", (3,))],
            "offsets": [0, 4, 8, 12],
            "itemsize": 24,
        }
    )
    msg = cloud(dt, {**xyz_dict(), "normal": 1.0})
    out = decode_pointcloud2(msg)
    assert out.columns == ("x", "y", "z", "intensity")
    assert any("normal" in n for n in out.dropped_fields)


def test_bad_messages_raise_one_line_naming_the_message():
    dt = layout([("x", "f4", 0), ("y", "f4", 4), ("z", "f4", 8)], 12)
    msg = cloud(dt, xyz_dict())
    truncated = NS(**{**vars(msg), "data": msg.data[:-5]})
    with pytest.raises(DataError, match=r"log.bag: topic /p message 3: data holds .* truncated"):
        decode_pointcloud2(truncated, "log.bag: topic /p message 3")
    past = NS(**{**vars(msg), "point_step": 10, "row_step": 10 * N})
    with pytest.raises(DataError, match="runs past point_step"):
        decode_pointcloud2(past, "m")
    no_z = cloud(layout([("x", "f4", 0), ("y", "f4", 4)], 8), {"x": XYZ[:, 0], "y": XYZ[:, 1]})
    with pytest.raises(DataError, match="no z field"):
        decode_pointcloud2(no_z, "m")
    bad_type = NS(**{**vars(msg), "fields": [NS(name="x", offset=0, datatype=9, count=1)]})
    with pytest.raises(DataError, match="datatype 9"):
        decode_pointcloud2(bad_type, "m")
