"""zlib streams of Waymo's compressed matrices, through libdeflate when it is installed, zlib otherwise.

Waymo v1 stores every range image, pixel pose and camera projection as ``zlib(serialized Matrix)``.
libdeflate (the `deflate` package) inflates and deflates the same standard zlib streams about twice
as fast as zlib, but it inflates into a buffer it is given: it needs the inflated size, or a bound
of it, up front. A zlib stream does not record its inflated size, but a `MatrixFloat` begins with
its data field's length (tag ``0x0A``, then a varint), so inflating the first few bytes of the
stream gives the size of everything but the small shape field that follows the data (see
`matrix_size_bound`). When that header is not what a packed `MatrixFloat` starts with, or libdeflate
refuses the stream (damaged, or larger than the bound), the zlib path decides, so the bytes returned
and the errors raised are zlib's in every case.

Backends: ``"libdeflate"`` or ``"zlib"``; ``"auto"`` (the default) takes libdeflate when `deflate`
imports, else zlib, and logs the choice once. `set_backend` chooses for the process; an explicit
choice that cannot be met raises `BackendUnavailableError`. Both release the GIL while they work,
so the reader's decoding threads run in parallel either way.
"""

from __future__ import annotations

import logging
import zlib
from threading import Lock

from drivetl.errors import BackendUnavailableError, ConfigError

BACKENDS: tuple[str, ...] = ("auto", "libdeflate", "zlib")

#: Bytes added to the data field's size for the tags, the data length varint and the shape field
#: (a handful of dims, each at most a tag and a 10-byte varint).
_SHAPE_ALLOWANCE = 256
#: DEFLATE cannot expand input by more than about 1032:1; a header that claims more is damaged.
_MAX_RATIO = 1032
#: libdeflate takes the output size as a C unsigned int.
_MAX_OUTPUT = 2**32 - 1

log = logging.getLogger("drivetl.data")

_lock = Lock()
_choice = "auto"
_resolved: str | None = None
_deflate = None  # the `deflate` module once imported


def _import_deflate():
    global _deflate
    if _deflate is None:
        import deflate

        _deflate = deflate
    return _deflate


def libdeflate_available() -> bool:
    """True when the `deflate` package (libdeflate) imports."""
    try:
        _import_deflate()
    except ImportError:
        return False
    return True


def set_backend(name: str) -> str:
    """Choose the backend for this process: ``auto``, ``libdeflate`` or ``zlib``; returns the one in use.

    An explicit ``libdeflate`` without the `deflate` package raises `BackendUnavailableError`.
    """
    global _choice, _resolved
    if name not in BACKENDS:
        raise ConfigError(f"zlib backend {name!r}: use one of {', '.join(BACKENDS)}")
    with _lock:
        _choice, _resolved = name, None
    return backend()


def backend() -> str:
    """The backend in use (``libdeflate`` or ``zlib``), resolved on first call and logged once."""
    global _resolved
    with _lock:
        if _resolved is None:
            _resolved = _resolve(_choice)
            log.info("Waymo zlib streams: %s", _resolved)
        return _resolved


def _resolve(name: str) -> str:
    if name == "zlib":
        return "zlib"
    if libdeflate_available():
        return "libdeflate"
    if name == "libdeflate":
        raise BackendUnavailableError(
            "zlib backend 'libdeflate' requested but the `deflate` package does not import; "
            "pip install deflate, or choose 'auto' or 'zlib'"
        )
    return "zlib"


def _read_varint(head: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(head) and shift <= 63:
        b = head[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return None


def matrix_size_bound(blob: bytes | bytearray | memoryview) -> int | None:
    """An upper bound of the inflated size of ``zlib(serialized MatrixFloat)``, from its first bytes.

    A packed `MatrixFloat` serializes as ``0x0A varint(n) <n data bytes> 0x12 varint(m) <m shape
    bytes>``; the first bytes of the stream give n, and the shape field is a few bytes. Returns None
    when the stream does not start like that (the caller then inflates with zlib) or when the size
    it claims is impossible for a DEFLATE stream of this length (a damaged stream).
    """
    view = memoryview(blob)
    inflater = zlib.decompressobj()
    head = b""
    try:
        for start in range(0, min(len(view), 4096), 256):  # small chunks: no copy of the whole input
            head += inflater.decompress(view[start : start + 256], 11 - len(head))
            if len(head) >= 11 or inflater.eof:
                break
    except zlib.error:
        return None
    if len(head) < 2 or head[0] != 0x0A:
        return None
    parsed = _read_varint(head, 1)
    if parsed is None:
        return None
    n, pos = parsed
    bound = pos + n + _SHAPE_ALLOWANCE
    if n > _MAX_RATIO * len(view) or bound > _MAX_OUTPUT:
        return None
    return bound


def inflate(blob: bytes | bytearray | memoryview, *, backend_name: str | None = None) -> bytes | bytearray:
    """The inflated bytes of a zlib stream (a Waymo compressed matrix); raises `zlib.error` when damaged.

    backend_name: ``libdeflate`` or ``zlib`` for this call (default: the process's backend). The
    bytes are the same whichever backend inflates them (libdeflate's result is a bytearray, which
    numpy views without a copy).
    """
    name = backend_name or backend()
    if name == "libdeflate":
        bound = matrix_size_bound(blob)
        if bound is not None:
            deflate = _import_deflate()
            try:
                return deflate.zlib_decompress(blob, bound)
            except deflate.DeflateError:
                pass  # damaged, or larger than the bound: zlib decides (and words the error)
    elif name != "zlib":
        raise ConfigError(f"zlib backend {name!r}: use libdeflate or zlib")
    return zlib.decompress(blob)


def compress(
    data: bytes | bytearray | memoryview, level: int = 6, *, backend_name: str | None = None
) -> bytes:
    """A standard zlib stream of `data` (zlib.decompress reads it), at `level` 0-9.

    libdeflate compresses faster than zlib at the same level; its streams differ in bytes from
    zlib's but inflate to the same data.
    """
    if not 0 <= int(level) <= 9:
        raise ConfigError(f"zlib compression level {level}: use 0-9")
    name = backend_name or backend()
    if name == "libdeflate":
        return bytes(_import_deflate().zlib_compress(data, int(level)))
    if name != "zlib":
        raise ConfigError(f"zlib backend {name!r}: use libdeflate or zlib")
    return zlib.compress(data, int(level))
