"""Point files: every format round-trips named columns; bad files raise DataError naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from drivetl.data.formats.pointfile import read_points, write_points
from drivetl.errors import DataError

COLS = ("x", "y", "z", "intensity")


def _points(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = rng.normal(0, 10, (n, 4)).astype(np.float32)
    pts[:, 3] = rng.integers(0, 256, n)
    return pts


@pytest.mark.parametrize("suffix", [".pcd", ".bin", ".npy", ".npz", ".ply"])
def test_round_trip_keeps_columns(tmp_path, suffix):
    pts = _points()
    path = tmp_path / f"scan{suffix}"
    write_points(path, pts, COLS)
    back, cols = read_points(path, columns=COLS)
    assert cols == COLS
    np.testing.assert_array_equal(back, pts)


def test_pcd_ascii_and_aliases(tmp_path):
    path = tmp_path / "a.pcd"
    path.write_text(
        "# comment\nVERSION .7\nFIELDS x y z reflectance ring\nSIZE 4 4 4 4 2\nTYPE F F F F U\n"
        "COUNT 1 1 1 1 1\nWIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n"
        "1 2 3 0.5 7\n4 5 6 0.25 8\n"
    )
    pts, cols = read_points(path)
    assert cols == ("x", "y", "z", "intensity", "laser_id")
    np.testing.assert_allclose(pts, [[1, 2, 3, 0.5, 7], [4, 5, 6, 0.25, 8]])


def test_pcd_binary_compressed_written_by_open3d(tmp_path):
    o3d = pytest.importorskip("open3d")
    xyz = _points(300)[:, :3].astype(np.float64)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    path = tmp_path / "c.pcd"
    assert o3d.io.write_point_cloud(str(path), pcd, compressed=True)
    assert b"binary_compressed" in path.read_bytes()[:400]
    pts, cols = read_points(path)
    assert cols[:3] == ("x", "y", "z")
    np.testing.assert_allclose(pts[:, :3], xyz, atol=1e-4)


def test_truncated_pcd_names_file(tmp_path):
    path = tmp_path / "t.pcd"
    write_points(path, _points(), COLS)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t\.pcd.*truncated"):
        read_points(path)


def test_not_a_pcd(tmp_path):
    path = tmp_path / "garbage.pcd"
    path.write_bytes(b"\x00\x01 hello")
    with pytest.raises(DataError, match="garbage.pcd"):
        read_points(path)


def test_nan_points_rejected_and_old_file_kept(tmp_path):
    path = tmp_path / "n.npy"
    good = _points()
    write_points(path, good, COLS)
    bad = good.copy()
    bad[7, 1] = np.nan
    with pytest.raises(DataError, match=r"n\.npy.*NaN.*index 7"):
        write_points(path, bad, COLS)
    np.testing.assert_array_equal(read_points(path, COLS)[0], good)
    assert [p.name for p in tmp_path.iterdir()] == ["n.npy"]
    np.save(tmp_path / "raw.npy", bad)
    with pytest.raises(DataError, match=r"raw\.npy.*NaN"):
        read_points(tmp_path / "raw.npy", COLS)


def test_bin_layout_must_divide(tmp_path):
    path = tmp_path / "k.bin"
    np.arange(10, dtype=np.float32).tofile(path)
    with pytest.raises(DataError, match=r"k\.bin.*4 declared columns"):
        read_points(path, COLS)
    pts, cols = read_points(path, ("x", "y", "z", "intensity", "time"))
    assert pts.shape == (2, 5)


def test_unknown_suffix_and_missing(tmp_path):
    with pytest.raises(DataError, match="unknown point-file suffix"):
        write_points(tmp_path / "a.xyz", _points(), COLS)
    with pytest.raises(DataError, match="not found"):
        read_points(tmp_path / "nope.pcd")


def test_real_hesai_pcd(real_data):
    pts, cols = read_points(real_data / "hesai_xt32" / "1673400678101968885.pcd")
    assert pts.shape == (63021, 3) and cols == ("x", "y", "z")
    assert np.isfinite(pts).all()


def test_pcd_binary_with_pcl_padding_fields(tmp_path):
    rec = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("_", "<f4"), ("intensity", "<f4")])
    rec["x"], rec["intensity"] = [1, 2, 3], [10, 20, 30]
    head = (
        "VERSION 0.7\nFIELDS x y z _ intensity\nSIZE 4 4 4 4 4\nTYPE F F F F F\nCOUNT 1 1 1 1 1\n"
        "WIDTH 3\nHEIGHT 1\nPOINTS 3\nDATA binary\n"
    )
    path = tmp_path / "pad.pcd"
    path.write_bytes(head.encode() + rec.tobytes())
    pts, cols = read_points(path)
    assert cols == COLS
    np.testing.assert_array_equal(pts[:, [0, 3]], [[1, 10], [2, 20], [3, 30]])
