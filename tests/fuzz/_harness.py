"""The fuzz harness shared by `tests/fuzz/test_*.py`: every reader of untrusted files gets mutated
copies of a valid file, and whatever the bytes, the outcome is a result or one of the project's error
types (a `DrivetlError`), never another exception, within bounded memory and time.

Mutations: flipped, deleted, inserted and truncated bytes, or random bytes (`mutated`); for JSON,
valid JSON with one value replaced or one key removed (`json_mutated`). Every case runs under
`run_case`: only a `DrivetlError` may escape, the Python heap's peak during the case (tracemalloc:
Python objects and numpy arrays) stays under `MEMORY_BASE` plus a multiple of the input's size, and
the case ends within `CASE_SECONDS` (a SIGALRM timer). The default run draws `EXAMPLES` (40) cases
per reader; ``pytest -m slow`` reruns the same tests with 1,000 cases each in a subprocess whose
address space is capped (RLIMIT_AS, `cap_address_space`), so allocations outside the Python heap
(pyarrow, open3d, protobuf) are bounded too.
"""

from __future__ import annotations

import functools
import io
import json
import os
import resource
import signal
import tracemalloc
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivetl.errors import DrivetlError

ROOT = Path(__file__).resolve().parents[2]
FLEET_RIG = ROOT / "configs" / "rigs" / "fleet_xt32.yaml"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
CASE_SECONDS = float(os.environ.get("FUZZ_CASE_SECONDS", "30"))
#: a case's peak traced memory may be MEMORY_BASE + ratio x the input's size (bytes)
MEMORY_BASE = 32 << 20
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large
    ],
)


def cap_address_space() -> None:
    """Under FUZZ_ADDRESS_SPACE_MB (the slow run), cap this process's address space at what it has
    mapped now plus that many MiB: an allocation past it fails (MemoryError) instead of succeeding."""
    extra = os.environ.get("FUZZ_ADDRESS_SPACE_MB")
    if not extra:
        return
    status = Path("/proc/self/status").read_text()
    vm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmSize:")))
    limit = vm_kb * 1024 + int(extra) * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


class CaseTimeout(BaseException):  # noqa: N818 - a BaseException, so no reader's `except Exception` hides it
    """A fuzz case ran past CASE_SECONDS."""


def _alarm(signum, frame):
    raise CaseTimeout(f"the case ran past {CASE_SECONDS:g} s")


def run_case(fn, *args, size: int, ratio: int = 64) -> None:
    """Run one case `fn(*args)` of an input of `size` bytes: a result or a `DrivetlError`, nothing
    else; a peak of at most MEMORY_BASE + ratio * size bytes of traced memory; at most CASE_SECONDS."""
    bound = MEMORY_BASE + ratio * size
    previous = signal.signal(signal.SIGALRM, _alarm)
    tracemalloc.start()
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        fn(*args)
    except DrivetlError:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= bound, f"the case peaked at {peak / 2**20:.1f} MiB, over {bound / 2**20:.1f} MiB"


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """`original` with a few random edits, or random bytes of a similar length."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=0, max_size=min(len(original), 4096)))
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("9"), ord("-")]))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:]
    return bytes(data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _paths(doc, prefix=()) -> list[tuple]:
    """Every path (a tuple of keys and indices) to a value inside the JSON document `doc`."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out += _paths(v, (*prefix, k))
    return out


@st.composite
def json_mutated(draw, original: bytes) -> bytes:
    """The JSON document `original` with one value replaced by any JSON value, or one key removed."""
    doc = json.loads(original)
    path = draw(st.sampled_from(_paths(doc)))
    parent = functools.reduce(lambda d, k: d[k], path[:-1], doc)
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(doc).encode()


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Write `files` (path in `root`: bytes) under `root`."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def fuzz_folder(root: Path, files: dict[str, bytes], read, seed_result: int, json_names=()) -> None:
    """Fuzz a reader of a folder of files: the seed `files` (path in `root`: bytes) read whole to
    `seed_result`, then each case replaces one file with a mutated copy (one value replaced, for the
    JSON files named in `json_names`) and runs `read()` under `run_case`; the seed is written back
    after each case."""
    write_files(root, files)
    assert read() == seed_result  # the seed reads whole
    size = sum(len(b) for b in files.values())

    @FUZZ
    @given(data=st.data())
    def check(data) -> None:
        name = data.draw(st.sampled_from(sorted(files)))
        edit = mutated(files[name])
        if name in json_names:
            edit = edit | json_mutated(files[name])
        write_files(root, {name: data.draw(edit)})
        try:
            run_case(read, size=size)
        finally:
            write_files(root, {name: files[name]})

    check()


def ring_points(inclinations, columns: int, radius: float = 10.0) -> np.ndarray:
    """(H * columns, 3) points at `radius` metres on every beam of `inclinations` (radians)."""
    e, a = np.meshgrid(np.asarray(inclinations), np.linspace(-np.pi, np.pi, columns, endpoint=False),
                       indexing="ij")
    xyz = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1) * radius
    return xyz.reshape(-1, 3)


def jpeg(width: int = 24, height: int = 16) -> bytes:
    """A valid `width` x `height` JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buf, "JPEG")
    return buf.getvalue()
