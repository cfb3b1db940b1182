"""Waymo's compressed matrices (`MatrixFloat`, `MatrixInt32`) to and from numpy, without a protobuf parse.

A range image is stored as ``zlib(serialized MatrixFloat)``. A `MatrixFloat` is two protobuf fields:
``data`` (field 1, packed little-endian float32) and ``shape`` (field 2, a `MatrixShape` whose field 1
holds the dims as varints). Parsing those two fields by hand lets `np.frombuffer` view the inflated
bytes directly (no per-float work), which is what makes decoding run at inflate speed.
"""

from __future__ import annotations

import numpy as np

from drivetl.data.formats.waymo import _zlib


class MatrixFormatError(ValueError):
    """The bytes are not a MatrixFloat/MatrixInt32 this parser understands."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise MatrixFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MatrixFormatError("varint too long")


def _dims(buf: memoryview) -> list[int]:
    dims: list[int] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if field == 1 and wire == 0:
            value, pos = _varint(buf, pos)
            dims.append(value)
        elif field == 1 and wire == 2:
            n, pos = _varint(buf, pos)
            end = pos + n
            while pos < end:
                value, pos = _varint(buf, pos)
                dims.append(value)
        else:
            raise MatrixFormatError(f"unexpected field {field} (wire type {wire}) in MatrixShape")
    return dims


def parse_matrix(raw: bytes | bytearray | memoryview, dtype: str) -> np.ndarray:
    """Parse a serialized MatrixFloat (dtype "<f4") or MatrixInt32 ("int32") into an array of its shape.

    Packed float data is viewed without a copy (the result is read-only when `raw` is bytes).
    MatrixInt32 data is varint-encoded and goes through the protobuf parser (rarely needed).
    """
    if dtype != "<f4":
        from waymo_open_dataset import dataset_pb2

        m = dataset_pb2.MatrixInt32()
        m.ParseFromString(bytes(raw))
        return np.asarray(m.data, dtype=np.int32).reshape(tuple(m.shape.dims))
    buf = memoryview(raw)
    pos = 0
    chunks: list[memoryview] = []
    dims: list[int] = []
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise MatrixFormatError("field runs past the end of the matrix")
            if field == 1:
                chunks.append(buf[pos : pos + n])
            elif field == 2:
                dims = _dims(buf[pos : pos + n])
            pos += n
        elif wire == 5 and field == 1:  # unpacked float: rare; collect one by one
            chunks.append(buf[pos : pos + 4])
            pos += 4
        else:
            raise MatrixFormatError(f"unexpected field {field} (wire type {wire}) in MatrixFloat")
    if len(chunks) == 1:
        data = np.frombuffer(chunks[0], dtype="<f4")
    else:
        data = np.frombuffer(b"".join(chunks), dtype="<f4")
    expected = int(np.prod(dims)) if dims else 0
    if data.size != expected:
        raise MatrixFormatError(f"matrix has {data.size} values but shape {dims}")
    return data.reshape(dims)


def inflate_matrix(compressed: bytes, dtype: str = "<f4") -> np.ndarray:
    """Inflate (libdeflate or zlib, see `_zlib`) then parse one compressed Waymo matrix (`parse_matrix`)."""
    return parse_matrix(_zlib.inflate(compressed), dtype)


def _put_varint(out: bytearray, value: int) -> None:
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def serialize_matrix_float(array: np.ndarray) -> bytes:
    """Serialize a float array as a MatrixFloat (packed data, then shape), as protobuf would."""
    a = np.ascontiguousarray(array, dtype="<f4")
    out = bytearray()
    payload = a.tobytes()
    if payload:
        out.append(0x0A)
        _put_varint(out, len(payload))
        out += payload
    shape = bytearray()
    for d in a.shape:
        shape.append(0x08)
        _put_varint(shape, int(d))
    out.append(0x12)
    _put_varint(out, len(shape))
    out += shape
    return bytes(out)


def compress_matrix_float(array: np.ndarray, level: int = 6) -> bytes:
    """zlib(MatrixFloat(array)), as Waymo stores range images and pixel poses (a standard zlib stream,
    compressed through libdeflate when it is installed)."""
    return _zlib.compress(serialize_matrix_float(array), level)


def compress_zero_matrix_int32(shape: tuple[int, ...], level: int = 6) -> bytes:
    """zlib(MatrixInt32(zeros(shape))): an empty camera projection (official tools expect one)."""
    out = bytearray()
    n = int(np.prod(shape))
    if n:
        out.append(0x0A)
        _put_varint(out, n)
        out += bytes(n)  # varint 0 is one zero byte
    dims = bytearray()
    for d in shape:
        dims.append(0x08)
        _put_varint(dims, int(d))
    out.append(0x12)
    _put_varint(out, len(dims))
    out += dims
    return _zlib.compress(bytes(out), level)
