"""Fuzzing every reader of untrusted files: whatever the bytes, the outcome is a result or one of the
project's error types (a `DrivetlError`), never another exception, within bounded memory and time.

Each reader gets mutated copies of a valid file (flipped, deleted, inserted and truncated bytes) and
random bytes; the JSON readers also get valid JSON with one value replaced. Every case runs under
`_check`: only a `DrivetlError` may escape, the Python heap's peak during the case (tracemalloc:
Python objects and numpy arrays) stays under `MEMORY_BASE` plus a multiple of the input's size, and
the case ends within `CASE_SECONDS` (a SIGALRM timer). The default run draws `EXAMPLES` (40) cases
per reader; ``pytest -m slow`` reruns the same tests with 1,000 cases each in a subprocess whose
address space is capped (RLIMIT_AS), so allocations outside the Python heap (pyarrow, open3d,
protobuf) are bounded too.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import resource
import signal
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivetl.errors import DrivetlError

ROOT = Path(__file__).resolve().parents[1]
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


def _cap_address_space() -> None:
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


def _check(fn, *args, size: int, ratio: int = 64) -> None:
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


def _run(fn, *args) -> None:
    """`_check` for the small inputs of the first readers below (a fixed bound)."""
    _check(fn, *args, size=1 << 16)


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


# ---------------------------------------------------------------------------- TFRecord and Waymo


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

    _check(read_all, size=len(data))
    _check(lambda: [r for r in WaymoRecordIndex([path])], size=len(data))


@FUZZ
@given(data=mutated(WAYMO))
def test_waymo_frame_decoding(data: bytes) -> None:
    from drivetl.data.formats.waymo import WaymoFrame
    from drivetl.data.formats.waymo._reader import parse_frame

    def decode():
        frame = WaymoFrame(parse_frame(data, "record"), where="record", threads=1)
        frame.points()
        frame.to_record()

    _check(decode, size=len(data))


# ------------------------------------------------------------------------------------ point files


def _point_file(suffix: str) -> bytes:
    from drivetl.data.formats.pointfile import write_points

    pts = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    buf = Path(os.environ.get("TMPDIR", "/tmp")) / f"drivetl_fuzz_seed{os.getpid()}{suffix}"
    write_points(buf, pts, ("x", "y", "z", "intensity"))
    data = buf.read_bytes()
    buf.unlink()
    return data


PLY_ASCII = (
    b"ply\nformat ascii 1.0\ncomment written by hand\nelement vertex 3\nproperty float x\n"
    b"property float y\nproperty float z\nproperty uchar intensity\nend_header\n"
    b"1 2 3 10\n4 5 6 20\n7 8 9 255\n"
)


@pytest.mark.parametrize("suffix", [".pcd", ".ply", ".ply-ascii", ".bin", ".npy", ".npz"])
def test_point_files(tmp_path_factory, suffix: str) -> None:
    from drivetl.data.formats.pointfile import read_points

    seed = PLY_ASCII if suffix == ".ply-ascii" else _point_file(suffix)
    path = tmp_path_factory.mktemp("pf") / f"x{suffix.split('-')[0]}"
    path.write_bytes(seed)
    assert read_points(path)[0].shape[0] in (3, 50)  # the seed reads

    @FUZZ
    @given(data=mutated(seed))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        _check(read_points, path, size=len(data))

    check()


@FUZZ
@given(data=mutated(b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\n"
                    b"COUNT 1 1 1 1\nWIDTH 3\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA ascii\n"
                    b"1 2 3 0.5\n4 5 6 0.25\n7 8 9 1\n"))
def test_pcd_ascii_headers(tmp_path_factory, data: bytes) -> None:
    from drivetl.data.formats.pointfile import read_points

    path = tmp_path_factory.mktemp("pcd") / "x.pcd"
    path.write_bytes(data)
    _check(read_points, path, size=len(data))


# ------------------------------------------------------------------------ rig, team JSON, KITTI


RIG_TEXT = (ROOT / "configs" / "rigs" / "fleet_xt32.yaml").read_bytes()


@FUZZ
@given(data=mutated(RIG_TEXT))
def test_rig_yaml(tmp_path_factory, data: bytes) -> None:
    from drivetl.calib import load_rig

    path = tmp_path_factory.mktemp("rig") / "rig.yaml"
    path.write_bytes(data)
    _check(load_rig, path, size=len(data))


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    from drivetl.calib import load_rig
    from drivetl.data.formats.team._example import write_example_team

    root = tmp_path_factory.mktemp("team") / "team"
    write_example_team(root, load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml"), frames=1, seed=0)
    return root


def test_team_frame_json(team: Path) -> None:
    from drivetl.data.formats.team import TeamReader

    frame = next((team / "frames").rglob("*.json"))
    original = frame.read_bytes()
    reader = TeamReader(team)  # the rig once; each case reads the frame file again

    @FUZZ
    @given(data=mutated(original) | json_mutated(original))
    def check(data: bytes) -> None:
        frame.write_bytes(data)
        try:
            _check(lambda: reader[0], size=len(data) + (1 << 16))
        finally:
            frame.write_bytes(original)

    check()


@pytest.fixture(scope="module")
def team_reader(team: Path):
    from drivetl.data.formats.team import TeamReader

    return TeamReader(team)


@FUZZ
@given(value=JSON_VALUES)
def test_team_label_values(team: Path, team_reader, value) -> None:
    """Any JSON value in any label field."""
    frame = next((team / "frames").rglob("*.json"))
    original = frame.read_text()
    doc = json.loads(original)
    for key in ("center", "size", "heading", "class", "num_points", "difficulty", "speed", "id"):
        doc["labels"]["objects"][0][key] = value
        frame.write_text(json.dumps(doc))
        try:
            _check(lambda: team_reader[0], size=len(original) + (1 << 16))
        finally:
            frame.write_text(original)
        doc = json.loads(original)


@FUZZ
@given(data=mutated(
    b"Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59\n"
    b"Pedestrian 0.00 0 0.21 423.17 173.67 433.17 224.03 1.73 0.57 0.83 -4.71 1.57 29.05 0.05\n"
))
def test_kitti_labels(tmp_path_factory, data: bytes) -> None:
    from drivetl.data.formats.kitti import read_kitti_labels

    path = tmp_path_factory.mktemp("kitti") / "000000.txt"
    path.write_bytes(data)
    _check(read_kitti_labels, path, size=len(data))


# ------------------------------------------------------------------------- adapter files, images


@FUZZ
@given(header=st.text(max_size=64) | st.just('{"format": 1}'))
def test_adapter_headers(tmp_path_factory, header: str) -> None:
    import torch
    from safetensors.torch import save_file

    from drivetl.models.adapters._export import META_KEY, read_adapter_metadata

    path = tmp_path_factory.mktemp("ad") / "a.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={META_KEY: header})
    _check(read_adapter_metadata, path, size=path.stat().st_size)


def _jpeg(width: int = 24, height: int = 16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buf, "JPEG")
    return buf.getvalue()


@FUZZ
@given(data=mutated(_jpeg()))
def test_camera_images(data: bytes) -> None:
    from drivetl.data.records import CameraImage

    img = CameraImage("FRONT", data, "jpeg")
    _check(img.size, size=len(data))
    _check(img.decode, size=len(data))


# ------------------------------------------------------------------------ ROS 1 bags and MCAP


FLEET = ROOT / "configs" / "rigs" / "fleet_xt32.yaml"


def _ring_points(inclinations, columns: int, radius: float = 10.0) -> np.ndarray:
    """(H * columns, 3) points at `radius` metres on every beam of `inclinations` (radians)."""
    e, a = np.meshgrid(np.asarray(inclinations), np.linspace(-np.pi, np.pi, columns, endpoint=False),
                       indexing="ij")
    xyz = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1) * radius
    return xyz.reshape(-1, 3)


@functools.cache
def _log_seed(container: str):
    """(bytes, topics, rig) of a two-frame log: fleet_xt32's LiDAR (points on its beams) and a
    16 x 12 camera, written the way a car's drivers publish them."""
    import tempfile

    from drivetl.calib import load_rig
    from drivetl.data.formats.bag import write_log
    from drivetl.data.records import CameraImage, FrameKey, FrameRecord, LidarPoints
    from drivetl.data.synthetic import synthetic_cameras

    rig = dataclasses.replace(load_rig(FLEET), cameras=synthetic_cameras(16, 12)[:1])
    lidar, cam = rig.lidars[0], rig.cameras[0]
    xyz = _ring_points(lidar.inclinations, 12)
    pts = np.column_stack([xyz, np.full(len(xyz), 100.0)]).astype(np.float32)
    records = [
        FrameRecord(
            FrameKey("log", 1_000_000 + 100_000 * i),
            rig,
            {lidar.name: LidarPoints(lidar.name, pts, ("x", "y", "z", "intensity"), "sensor")},
            {cam.name: CameraImage(cam.name, _jpeg(16, 12))},
        )
        for i in range(2)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("log.bag" if container == "ros1" else "log.mcap")
        info = write_log(path, rig, records, container=container)
        return path.read_bytes(), info, rig


@pytest.mark.parametrize("container", ["ros1", "mcap-cdr"])
def test_logs(tmp_path_factory, container: str) -> None:
    """ROS 1 bags (uncompressed chunks: the messages' own bytes are mutated) and MCAP files (zstd
    chunks): imported with a given rig, and the rig read from the log (tf, CameraInfo, beams)."""
    import shutil

    from drivetl.data.formats.bag import LogSelection, Topic, import_bag, rig_from_log

    seed, info, rig = _log_seed(container)
    lidar = rig.lidars[0].name
    cameras = tuple(Topic(t, n) for n, t in info["camera_topics"].items())
    sel = LogSelection(Topic(info["lidar_topics"][lidar], lidar), cameras)
    work = tmp_path_factory.mktemp("log")
    path = work / ("log.bag" if container == "ros1" else "log.mcap")

    def read(data: bytes) -> int:
        path.write_bytes(data)
        shutil.rmtree(work / "out", ignore_errors=True)
        frames = import_bag(path, work / "out", sel, rig=rig)["frames"]
        rig_from_log(path, sel)
        return frames

    assert read(seed) == 2  # the seed imports whole

    @FUZZ
    @given(data=mutated(seed))
    def check(data: bytes) -> None:
        _check(read, data, size=len(data))

    check()


# ------------------------------------------------------------------------------ Argoverse 2


def _feather(columns: dict, compression: str = "uncompressed") -> bytes:
    import pyarrow as pa
    import pyarrow.feather as feather

    sink = pa.BufferOutputStream()
    feather.write_feather(pa.table(columns), sink, compression=compression)
    return sink.getvalue().to_pybytes()


@functools.cache
def _av2_seed() -> dict[str, bytes]:
    """{path in the log folder: bytes} of a one-sweep Argoverse 2 log: two stacked 32-beam LiDARs
    (points on their beams), calibration, ego pose, two annotated cuboids (lz4-compressed)."""
    ts = 315_973_157_959_879_000
    mounts = {"up_lidar": 1.95, "down_lidar": 1.6}
    x, y, z, ring = [], [], [], []
    for k, height in enumerate(mounts.values()):
        inc = np.radians(np.linspace(-25.0 + 5 * k, 15.0 - 5 * k, 32))
        xyz = _ring_points(inc, 8)
        x.append(xyz[:, 0] + 1.35)
        y.append(xyz[:, 1])
        z.append(xyz[:, 2] + height)
        ring.append(np.repeat(np.arange(32) + 32 * k, 8))
    n = sum(len(r) for r in ring)
    sweep = {
        "x": np.concatenate(x).astype(np.float16),
        "y": np.concatenate(y).astype(np.float16),
        "z": np.concatenate(z).astype(np.float16),
        "intensity": np.full(n, 30, np.uint8),
        "laser_number": np.concatenate(ring).astype(np.uint8),
        "offset_ns": np.linspace(0, 1e8, n).astype(np.int32),
    }

    def poses(m: int, tz=()) -> dict:
        return {"qw": np.ones(m), "qx": np.zeros(m), "qy": np.zeros(m), "qz": np.zeros(m),
                "tx_m": np.full(m, 1.35), "ty_m": np.zeros(m), "tz_m": np.asarray(tz or [0.0] * m)}

    calibration = {"sensor_name": list(mounts), **poses(2, list(mounts.values()))}
    annotations = {
        "timestamp_ns": np.array([ts, ts]), "track_uuid": ["a", "b"],
        "category": ["REGULAR_VEHICLE", "PEDESTRIAN"], "length_m": [4.5, 0.6], "width_m": [1.9, 0.6],
        "height_m": [1.6, 1.8], **poses(2, [0.8, 0.9]), "num_interior_pts": np.array([12, 3]),
    }
    return {
        f"sensors/lidar/{ts}.feather": _feather(sweep),
        "calibration/egovehicle_SE3_sensor.feather": _feather(calibration),
        "annotations.feather": _feather(annotations, "lz4"),
        "city_SE3_egovehicle.feather": _feather({"timestamp_ns": np.array([ts]), **poses(1)}),
    }


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _fuzz_folder(root: Path, files: dict[str, bytes], read, seed_result: int, json_names=()) -> None:
    """Fuzz a reader of a folder of files: the seed `files` (path in `root`: bytes) read whole to
    `seed_result`, then each case replaces one file with a mutated copy (one value replaced, for the
    JSON files named in `json_names`) and runs `read()` under `_check`; the seed is written back
    after each case."""
    _write_files(root, files)
    assert read() == seed_result  # the seed reads whole
    size = sum(len(b) for b in files.values())

    @FUZZ
    @given(data=st.data())
    def check(data) -> None:
        name = data.draw(st.sampled_from(sorted(files)))
        edit = mutated(files[name])
        if name in json_names:
            edit = edit | json_mutated(files[name])
        _write_files(root, {name: data.draw(edit)})
        try:
            _check(read, size=size)
        finally:
            _write_files(root, {name: files[name]})

    check()


def test_argoverse2_logs(tmp_path_factory) -> None:
    from drivetl.data.formats.av2 import Av2Log

    files = _av2_seed()
    root = tmp_path_factory.mktemp("av2") / "log"

    def read() -> int:
        log = Av2Log(root)
        return sum(len(log.read(ts)[0].boxes) for ts in log.sweeps)

    _fuzz_folder(root, files, read, 2)


# ------------------------------------------------------------------------------------- TRI DGP


def test_dgp_scenes(tmp_path_factory, dgp_scene_files) -> None:
    """Mutated bytes of any of a scene's files, or its JSON files with one value replaced."""
    import shutil

    from drivetl.data.formats.dgp import import_dgp

    files = dgp_scene_files
    work = tmp_path_factory.mktemp("dgp")

    def read() -> int:
        shutil.rmtree(work / "out", ignore_errors=True)
        return int(import_dgp(work / "scene", work / "out")["boxes"])

    texts = [k for k in files if k.endswith(".json")]
    _fuzz_folder(work / "scene", files, read, 2, json_names=texts)


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

    _fuzz_folder(root, files, read, 2)


# ---------------------------------------------------------------------------------------- slow run


@pytest.fixture(scope="module", autouse=True)
def _address_space():
    """The slow run's address-space cap, set once the heavy libraries are loaded
    (`_cap_address_space`)."""
    if os.environ.get("FUZZ_ADDRESS_SPACE_MB"):
        import open3d  # noqa: F401
        import pyarrow.parquet  # noqa: F401
        import rosbags.rosbag1  # noqa: F401
        import torch  # noqa: F401
        from waymo_open_dataset import dataset_pb2  # noqa: F401

        _cap_address_space()
    yield


@pytest.mark.slow
def test_long_fuzz_run() -> None:
    """The same fuzz tests with 1,000 cases per reader (20,000 in all), in a subprocess whose address
    space is capped at 1 GiB over what it maps once its libraries are loaded (about two minutes on a
    quiet machine)."""
    import subprocess
    import sys

    env = dict(os.environ, FUZZ_EXAMPLES="1000", FUZZ_ADDRESS_SPACE_MB="1024")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", __file__],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
