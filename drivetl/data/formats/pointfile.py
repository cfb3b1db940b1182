"""Point-cloud files: read and write `.pcd`, `.ply`, `.bin`, `.npy` and `.npz` as (N, C) float32 arrays.

Every reader returns `(points, columns)`: `points` is (N, C) float32, `columns` names each column
(e.g. ``("x", "y", "z", "intensity")``). PCD (ascii, binary and binary_compressed) is parsed here
in numpy, so named columns such as intensity survive; PLY (ascii and binary) is parsed in numpy too
(`_ply`: the vertex element's scalar properties, in file order) and written through open3d
(imported lazily). A `.bin` file has no header: its column
layout and dtype are declared by the caller (KITTI: float32 x, y, z, reflectance). `.npy` holds the
array alone (columns declared by the caller); `.npz` holds it under key ``points`` (or ``data``, as in
TRI's DGP) with an optional ``columns`` string array.

Bad files raise `DataError` naming the file and what is wrong; writers go through `atomic_write`.
"""

from __future__ import annotations

import io
import os
import struct
import tokenize
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from drivetl._io import atomic_write, atomic_write_bytes
from drivetl.errors import DataError, short_repr

SUFFIXES: tuple[str, ...] = (".pcd", ".ply", ".bin", ".npy", ".npz")
DEFAULT_COLUMNS: tuple[str, ...] = ("x", "y", "z", "intensity")

# Column names other tools use for the same quantity, mapped to drivetl's names.
_ALIASES = {
    "reflectance": "intensity",
    "reflectivity": "intensity",
    "i": "intensity",
    "ring": "laser_id",
    "t": "time",
    "timestamp": "time",
}

# Bounds read from a PCD header are checked against these before anything is allocated.
_MAX_PCD_HEADER = 64 << 10  # bytes before the DATA line
_MAX_PCD_COLUMNS = 256  # values per point (sum of COUNT)
_LZF_MAX_RATIO = 88  # LZF's best case: a 3-byte back reference copies 264 bytes

_PCD_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("I", 1): "<i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
    ("U", 1): "<u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
}


def _canonical_name(name: str) -> str:
    low = name.strip().lower()
    return _ALIASES.get(low, low)


def read_points(
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
    dtype: str = "float32",
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read a point file; returns ((N, C) float32 points, column names).

    columns: for `.bin` and `.npy` the declared layout (default x, y, z, intensity); ignored for
        self-describing formats. dtype: the `.bin` element type (default float32).
    Raises DataError for an unknown suffix, a malformed or truncated file, or non-finite x, y, z.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: point file not found")
    try:
        if suffix == ".pcd":
            pts, cols = _read_pcd(path)
        elif suffix == ".ply":
            pts, cols = _read_ply(path)
        elif suffix == ".bin":
            pts, cols = _read_bin(path, tuple(columns or DEFAULT_COLUMNS), dtype)
        elif suffix == ".npy":
            pts, cols = _read_npy(path, tuple(columns or DEFAULT_COLUMNS))
        elif suffix == ".npz":
            pts, cols = _read_npz(path, columns)
        else:
            raise DataError(f"{path}: unknown point-file suffix {suffix!r}; use one of {', '.join(SUFFIXES)}")
    except DataError:
        raise
    except (ValueError, OSError, KeyError, struct.error, EOFError, zipfile.BadZipFile, SyntaxError,
            tokenize.TokenError) as exc:  # the last two: numpy parsing a damaged .npy header
        raise DataError(f"{path}: unreadable point file ({exc})") from exc
    pts = np.ascontiguousarray(pts, dtype=np.float32)
    cols = tuple(_canonical_name(c) for c in cols)
    check_points(pts, cols, str(path))
    return pts, cols


def check_points(points: np.ndarray, columns: Sequence[str], where: str) -> None:
    """Raise DataError naming `where` when points lack x, y, z or hold NaN/inf coordinates."""
    if points.ndim != 2 or points.shape[1] != len(columns):
        raise DataError(f"{where}: points shape {points.shape} does not match columns {tuple(columns)}")
    missing = [c for c in ("x", "y", "z") if c not in columns]
    if missing:
        raise DataError(f"{where}: point columns {tuple(columns)} lack {missing}")
    xyz = points[:, [list(columns).index(c) for c in ("x", "y", "z")]]
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: {int(bad.sum())} points have NaN/inf coordinates (first at index {first}); "
            "drop invalid returns before writing the file"
        )


def write_points(
    path: str | os.PathLike, points: np.ndarray, columns: Sequence[str] = DEFAULT_COLUMNS
) -> None:
    """Write (N, C) points with named columns atomically; the format follows the suffix.

    `.pcd` is written binary (float32 fields), `.bin` as raw float32 (the caller must record the
    column layout), `.npy` as the float32 array, `.npz` with keys ``points`` and ``columns``, `.ply`
    through open3d.
    """
    path = Path(path)
    pts = np.ascontiguousarray(points, dtype=np.float32)
    columns = tuple(columns)
    check_points(pts, columns, str(path))
    suffix = path.suffix.lower()
    if suffix == ".pcd":
        atomic_write_bytes(path, _pcd_bytes(pts, columns))
    elif suffix == ".bin":
        atomic_write_bytes(path, pts.tobytes())
    elif suffix == ".npy":
        with atomic_write(path, "wb") as f:
            np.save(f, pts)
    elif suffix == ".npz":
        with atomic_write(path, "wb") as f:
            np.savez(f, points=pts, columns=np.array(columns))
    elif suffix == ".ply":
        _write_ply(path, pts, columns)
    else:
        raise DataError(f"{path}: unknown point-file suffix {suffix!r}; use one of {', '.join(SUFFIXES)}")


# ---------------------------------------------------------------------------------------------- PCD


def _pcd_bytes(points: np.ndarray, columns: tuple[str, ...], data: str = "binary") -> bytes:
    n, c = points.shape
    header = [
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(columns),
        "SIZE " + " ".join(["4"] * c),
        "TYPE " + " ".join(["F"] * c),
        "COUNT " + " ".join(["1"] * c),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        f"DATA {data}",
    ]
    head = ("\n".join(header) + "\n").encode("ascii")
    if data == "ascii":
        buf = io.StringIO()
        np.savetxt(buf, points, fmt="%.7g")
        return head + buf.getvalue().encode("ascii")
    return head + points.astype("<f4").tobytes()


def _parse_pcd_header(raw: bytes, path: Path) -> tuple[dict[str, list[str]], int]:
    fields: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0 or end > _MAX_PCD_HEADER:
            raise DataError(f"{path}: PCD header has no DATA line (truncated or not a PCD file)")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        if not values:
            raise DataError(f"{path}: PCD header line {key.upper()} has no value")
        fields[key.upper()] = values
        if key.upper() == "DATA":
            return fields, pos


def _header_ints(
    head: dict[str, list[str]], key: str, path: Path, default: list[str] | None = None
) -> list[int]:
    """The integers of header line `key` (each >= 0), or DataError quoting a short prefix of the line."""
    values = head.get(key, default)
    if values is None:
        raise DataError(f"{path}: PCD header lacks {key}")
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise DataError(
            f"{path}: PCD header {key} must be whole numbers, got {short_repr(' '.join(values))}"
        ) from None
    if any(v < 0 for v in out):
        raise DataError(f"{path}: PCD header {key} must not be negative, got {short_repr(' '.join(values))}")
    return out


def _read_pcd(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """PCD columns, without PCL's `_` padding fields."""
    pts, names = _read_pcd_all(path)
    keep = [i for i, c in enumerate(names) if not c.startswith("_pad")]
    return pts[:, keep], tuple(names[i] for i in keep)


def _read_pcd_all(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    raw = path.read_bytes()
    head, offset = _parse_pcd_header(raw, path)
    for key in ("FIELDS", "SIZE", "TYPE"):
        if key not in head:
            raise DataError(f"{path}: PCD header lacks {key}")
    names = [f"_pad{i}" if name == "_" else name for i, name in enumerate(head["FIELDS"])]
    sizes = _header_ints(head, "SIZE", path)
    types = [t.upper() for t in head["TYPE"]]
    counts = _header_ints(head, "COUNT", path, ["1"] * len(names))
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise DataError(f"{path}: PCD header FIELDS/SIZE/TYPE/COUNT lengths differ")
    if len(names) > _MAX_PCD_COLUMNS or sum(counts) > _MAX_PCD_COLUMNS:
        raise DataError(
            f"{path}: PCD header declares {sum(counts)} values per point in {len(names)} fields; "
            f"at most {_MAX_PCD_COLUMNS} are read (a corrupt COUNT or FIELDS line?)"
        )
    if "POINTS" in head:
        n = _header_ints(head, "POINTS", path)[0]
    else:
        n = _header_ints(head, "WIDTH", path, ["0"])[0] * _header_ints(head, "HEIGHT", path, ["1"])[0]
    dt_fields = []
    for name, size, typ, count in zip(names, sizes, types, counts, strict=True):
        if (typ, size) not in _PCD_TYPES:
            raise DataError(f"{path}: PCD field {name!r} has unsupported TYPE {typ} SIZE {size}")
        base = _PCD_TYPES[(typ, size)]
        dt_fields.append((name, base, (count,)) if count > 1 else (name, base))
    dtype = np.dtype(dt_fields)
    kind = head["DATA"][0].lower()
    body = raw[offset:]
    if kind == "ascii":
        text = body.decode("ascii", errors="replace").split()
        total = sum(counts)
        if len(text) < n * total:
            raise DataError(f"{path}: PCD ascii body has {len(text) // max(total, 1)} of {n} points")
        try:
            flat = np.array(text[: n * total], dtype=np.float64).reshape(n, total)
        except ValueError:
            bad = next((t for t in text[: n * total] if not _is_number(t)), "?")
            raise DataError(f"{path}: PCD ascii body holds a non-number {short_repr(bad)}") from None
        return flat, _column_names(names, counts)
    if kind == "binary":
        need = n * dtype.itemsize
        if len(body) < need:
            raise DataError(
                f"{path}: PCD binary body has {len(body)} bytes, {need} needed for {n} points "
                "(truncated file)"
            )
        rec = np.frombuffer(body, dtype=dtype, count=n)
    elif kind == "binary_compressed":
        if len(body) < 8:
            raise DataError(f"{path}: PCD binary_compressed body is truncated")
        csize, usize = struct.unpack("<II", body[:8])
        row_bytes = sum(size * count for size, count in zip(sizes, counts, strict=True))
        if csize > len(body) - 8:
            raise DataError(
                f"{path}: PCD binary_compressed body has {len(body) - 8} bytes, header says {csize}"
            )
        if usize != n * row_bytes or usize > _LZF_MAX_RATIO * csize + 64:
            raise DataError(
                f"{path}: PCD binary_compressed body declares {usize} bytes uncompressed; {n} points of "
                f"{row_bytes} bytes need {n * row_bytes}, from {csize} compressed bytes (corrupt header)"
            )
        plain = _lzf_decompress(body[8 : 8 + csize], usize, path)
        # Field-major: each field's values for all points are stored together.
        cols, pos = [], 0
        for size, typ, count in zip(sizes, types, counts, strict=True):
            nbytes = size * count * n
            if pos + nbytes > len(plain):
                raise DataError(f"{path}: PCD binary_compressed body is shorter than its header declares")
            vals = np.frombuffer(plain[pos : pos + nbytes], dtype=_PCD_TYPES[(typ, size)])
            cols.append(vals.astype(np.float64).reshape(n, count))
            pos += nbytes
        return np.concatenate(cols, axis=1), _column_names(names, counts)
    else:
        raise DataError(f"{path}: PCD DATA {kind!r} is not ascii, binary or binary_compressed")
    cols = [np.asarray(rec[name], dtype=np.float64).reshape(n, -1) for name in names]
    return np.concatenate(cols, axis=1) if cols else np.zeros((n, 0)), _column_names(names, counts)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _column_names(names: list[str], counts: list[int]) -> tuple[str, ...]:
    out: list[str] = []
    for name, count in zip(names, counts, strict=True):
        out.extend([name] if count == 1 else [f"{name}_{i}" for i in range(count)])
    return tuple(out)


def _lzf_decompress(data: bytes, size: int, path: Path) -> bytes:
    """Decompress LZF (the codec of PCD's binary_compressed), pure Python."""
    out = bytearray()
    i, n = 0, len(data)
    try:
        while i < n:
            ctrl = data[i]
            i += 1
            if ctrl < 32:  # literal run of ctrl + 1 bytes
                if len(out) + ctrl + 1 > size:
                    raise DataError(f"{path}: corrupt LZF stream in PCD binary_compressed body")
                out += data[i : i + ctrl + 1]
                i += ctrl + 1
            else:  # back reference
                length = ctrl >> 5
                if length == 7:
                    length += data[i]
                    i += 1
                ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
                i += 1
                if ref < 0 or len(out) + length + 2 > size:
                    raise DataError(f"{path}: corrupt LZF stream in PCD binary_compressed body")
                for _ in range(length + 2):
                    out.append(out[ref])
                    ref += 1
    except IndexError:
        raise DataError(f"{path}: truncated LZF stream in PCD binary_compressed body") from None
    if len(out) != size:
        raise DataError(
            f"{path}: PCD binary_compressed body decompressed to {len(out)} bytes, header says {size}"
        )
    return bytes(out)


# ------------------------------------------------------------------------------------ bin, npy, npz


def _read_bin(path: Path, columns: tuple[str, ...], dtype: str) -> tuple[np.ndarray, tuple[str, ...]]:
    raw = np.fromfile(path, dtype=np.dtype(dtype))
    if raw.size % len(columns):
        raise DataError(
            f"{path}: {raw.size} {dtype} values are not a multiple of the {len(columns)} declared columns "
            f"{columns}; check the declared .bin layout"
        )
    return raw.reshape(-1, len(columns)), columns


def _read_npy(path: Path, columns: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != len(columns):
        raise DataError(f"{path}: array shape {arr.shape} does not match the declared columns {columns}")
    return arr, columns


def _read_npz(path: Path, columns: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    with np.load(path, allow_pickle=False) as z:
        key = next((k for k in ("points", "data") if k in z.files), None)
        if key is None:
            raise DataError(f"{path}: .npz has no 'points' or 'data' array (has {z.files})")
        arr = z[key]
        cols = (
            tuple(str(c) for c in z["columns"]) if "columns" in z.files else tuple(columns or DEFAULT_COLUMNS)
        )
    if arr.ndim != 2 or arr.shape[1] != len(cols):
        raise DataError(f"{path}: array {key!r} shape {arr.shape} does not match columns {cols}")
    return arr, cols


# ---------------------------------------------------------------------------------------------- PLY


def _read_ply(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    from drivetl.data.formats._ply import read_ply

    return read_ply(path)


def _write_ply(path: Path, points: np.ndarray, columns: tuple[str, ...]) -> None:
    import tempfile

    import open3d as o3d

    pcd = o3d.t.geometry.PointCloud()
    idx = [columns.index(c) for c in ("x", "y", "z")]
    pcd.point["positions"] = o3d.core.Tensor(np.ascontiguousarray(points[:, idx]))
    for i, name in enumerate(columns):
        if name not in ("x", "y", "z"):
            pcd.point[name] = o3d.core.Tensor(np.ascontiguousarray(points[:, i : i + 1]))
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        tmp_file = Path(tmp) / path.name
        if not o3d.t.io.write_point_cloud(str(tmp_file), pcd, write_ascii=False):
            raise DataError(f"{path}: open3d could not write the PLY file")
        atomic_write_bytes(path, tmp_file.read_bytes())
