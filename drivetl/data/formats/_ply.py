"""PLY point files read in numpy: the `vertex` element's scalar properties as named columns.

A PLY file is a text header (``ply``, ``format ascii|binary_little_endian|binary_big_endian 1.0``,
``element NAME COUNT`` each followed by its ``property TYPE NAME`` lines, ``end_header``) and then
each element's rows in header order. Only the vertex element is returned, its properties as
columns in file order (``x y z intensity ...``); elements before it are skipped (in a binary file
they must have no list properties, whose rows have no fixed size), elements after it are ignored.

The header comes from another tool, so it is read as data: its length is capped, every count is
checked against the bytes (binary) or lines (ascii) the body holds before anything is allocated,
and every problem is one `DataError` naming the file and the header line. (open3d's reader, used
before, could crash the process on a damaged header.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivetl.errors import DataError, short_repr

__all__ = ["read_ply"]

_MAX_HEADER = 64 << 10  # bytes up to end_header
_MAX_PROPERTIES = 256  # properties of one element
_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


class _Element:
    """One ``element`` of the header: its name, row count and properties ((name, numpy kind) or
    (name, None) for a list property)."""

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count
        self.properties: list[tuple[str, str | None]] = []

    def dtype(self, order: str) -> np.dtype:
        return np.dtype([(f"p{i}", order + kind) for i, (_, kind) in enumerate(self.properties)])


def _header(raw: bytes, path: Path) -> tuple[str, list[_Element], int]:
    """(format, elements, offset of the body) of a PLY file's bytes."""
    if not raw.startswith(b"ply"):
        raise DataError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = raw.find(b"end_header", 0, _MAX_HEADER)
    if end < 0:
        raise DataError(f"{path}: PLY header has no end_header line in its first {_MAX_HEADER} bytes")
    body = raw.find(b"\n", end)
    if body < 0:
        raise DataError(f"{path}: PLY file ends at its end_header line (no data)")
    fmt: str | None = None
    elements: list[_Element] = []
    for number, line in enumerate(raw[:end].decode("ascii", errors="replace").splitlines()[1:], 2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        where = f"{path}: PLY header line {number} {short_repr(line.strip(), 60)}"
        if words[0] == "format" and len(words) == 3 and words[1] in _FORMATS:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit() and len(words[2]) < 16:
            elements.append(_Element(words[1], int(words[2])))
        elif words[0] == "property" and elements and len(elements[-1].properties) < _MAX_PROPERTIES:
            if len(words) == 3 and words[1] in _TYPES:
                elements[-1].properties.append((words[2], _TYPES[words[1]]))
            elif len(words) == 5 and words[1] == "list" and words[2] in _TYPES and words[3] in _TYPES:
                elements[-1].properties.append((words[4], None))
            else:
                raise DataError(f"{where}: not a property of a known type")
        else:
            raise DataError(f"{where}: not a PLY header line this reader knows")
    if fmt is None:
        raise DataError(f"{path}: PLY header has no format line (ascii or binary_*_endian 1.0)")
    return fmt, elements, body + 1


def read_ply(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """((N, C) float64 vertex properties, their names) of the PLY file `path`."""
    raw = path.read_bytes()
    fmt, elements, pos = _header(raw, path)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None:
        raise DataError(f"{path}: PLY file has no vertex element")
    if any(kind is None for _, kind in vertex.properties) or not vertex.properties:
        raise DataError(f"{path}: PLY vertex element has list properties or none; points need scalar ones")
    names = tuple(name for name, _ in vertex.properties)
    if len(set(names)) != len(names):
        raise DataError(f"{path}: PLY vertex element names a property twice ({short_repr(names)})")
    before = elements[: elements.index(vertex)]
    if fmt == "ascii":
        lines = raw[pos:].split(b"\n")
        first = sum(e.count for e in before)
        if first + vertex.count > len(lines):
            raise DataError(
                f"{path}: PLY body has {len(lines)} lines, the header declares {first + vertex.count} "
                "rows up to the last vertex (truncated file?)"
            )
        rows = [line.split() for line in lines[first : first + vertex.count]]
        bad = next((i for i, r in enumerate(rows) if len(r) != len(names)), None)
        if bad is not None:
            raise DataError(f"{path}: PLY vertex {bad} has {len(rows[bad])} values, the header {len(names)}")
        try:
            values = np.array(rows, dtype=np.float64).reshape(vertex.count, len(names))
        except ValueError:
            raise DataError(f"{path}: PLY ascii vertices hold a value that is not a number") from None
        return values, names
    order = _FORMATS[fmt]
    for e in before:
        if any(kind is None for _, kind in e.properties):
            raise DataError(f"{path}: PLY element {e.name!r} before the vertices has list properties")
        pos += e.count * e.dtype(order).itemsize
    dtype = vertex.dtype(order)
    if pos + vertex.count * dtype.itemsize > len(raw):
        raise DataError(
            f"{path}: PLY body holds {max(len(raw) - pos, 0)} bytes for the vertices, the header declares "
            f"{vertex.count} of {dtype.itemsize} bytes (truncated file?)"
        )
    rec = np.frombuffer(raw, dtype=dtype, count=vertex.count, offset=pos)
    values = np.stack([rec[f].astype(np.float64) for f in dtype.names], axis=1) if vertex.count else (
        np.zeros((0, len(names)))
    )
    return values, names
