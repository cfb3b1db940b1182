"""Fuzzing every reader of untrusted files: whatever the bytes, the outcome is a result or one of the
project's error types (a `DrivetlError`), never another exception.

Each reader gets mutated copies of a valid file (flipped, deleted, inserted and truncated bytes) and
random bytes. The default run draws a few dozen cases per reader; ``pytest -m slow`` draws many more
(same tests, `FUZZ_EXAMPLES` larger).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivetl.errors import DrivetlError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large
    ],
)


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


def _run(fn, *args) -> None:
    try:
        fn(*args)
    except DrivetlError:
        pass


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

    _run(read_all)
    _run(lambda: [r for r in WaymoRecordIndex([path])])


@FUZZ
@given(data=mutated(WAYMO))
def test_waymo_frame_decoding(data: bytes) -> None:
    from drivetl.data.formats.waymo import WaymoFrame
    from drivetl.data.formats.waymo._reader import parse_frame

    def decode():
        frame = WaymoFrame(parse_frame(data, "record"), where="record", threads=1)
        frame.points()
        frame.to_record()

    _run(decode)


# ------------------------------------------------------------------------------------ point files


def _point_file(suffix: str) -> bytes:
    from drivetl.data.formats.pointfile import write_points

    pts = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    buf = Path(os.environ.get("TMPDIR", "/tmp")) / f"drivetl_fuzz_seed{os.getpid()}{suffix}"
    write_points(buf, pts, ("x", "y", "z", "intensity"))
    data = buf.read_bytes()
    buf.unlink()
    return data


@pytest.mark.parametrize("suffix", [".pcd", ".bin", ".npy", ".npz"])
def test_point_files(tmp_path_factory, suffix: str) -> None:
    from drivetl.data.formats.pointfile import read_points

    @FUZZ
    @given(data=mutated(_point_file(suffix)))
    def check(data: bytes) -> None:
        path = tmp_path_factory.mktemp("pf") / f"x{suffix}"
        path.write_bytes(data)
        _run(read_points, path)

    check()


@FUZZ
@given(data=mutated(b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\n"
                    b"COUNT 1 1 1 1\nWIDTH 3\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA ascii\n"
                    b"1 2 3 0.5\n4 5 6 0.25\n7 8 9 1\n"))
def test_pcd_ascii_headers(tmp_path_factory, data: bytes) -> None:
    from drivetl.data.formats.pointfile import read_points

    path = tmp_path_factory.mktemp("pcd") / "x.pcd"
    path.write_bytes(data)
    _run(read_points, path)


# ------------------------------------------------------------------------ rig, team JSON, KITTI


RIG_TEXT = (ROOT / "configs" / "rigs" / "fleet_xt32.yaml").read_bytes()


@FUZZ
@given(data=mutated(RIG_TEXT))
def test_rig_yaml(tmp_path_factory, data: bytes) -> None:
    from drivetl.calib import load_rig

    path = tmp_path_factory.mktemp("rig") / "rig.yaml"
    path.write_bytes(data)
    _run(load_rig, path)


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

    @FUZZ
    @given(data=mutated(original))
    def check(data: bytes) -> None:
        frame.write_bytes(data)
        try:
            _run(lambda: TeamReader(team)[0])
        finally:
            frame.write_bytes(original)

    check()


@FUZZ
@given(value=st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
))
def test_team_label_values(team: Path, value) -> None:
    """Any JSON value in any label field."""
    from drivetl.data.formats.team import TeamReader

    frame = next((team / "frames").rglob("*.json"))
    original = frame.read_text()
    doc = json.loads(original)
    for key in ("center", "size", "heading", "class", "num_points", "difficulty", "speed", "id"):
        doc["labels"]["objects"][0][key] = value
        frame.write_text(json.dumps(doc))
        try:
            _run(lambda: TeamReader(team)[0])
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
    _run(read_kitti_labels, path)


# ------------------------------------------------------------------------- adapter files, images


@FUZZ
@given(header=st.text(max_size=64) | st.just('{"format": 1}'))
def test_adapter_headers(tmp_path_factory, header: str) -> None:
    import torch
    from safetensors.torch import save_file

    from drivetl.models.adapters._export import META_KEY, read_adapter_metadata

    path = tmp_path_factory.mktemp("ad") / "a.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={META_KEY: header})
    _run(read_adapter_metadata, path)


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (1, 2, 3)).save(buf, "JPEG")
    return buf.getvalue()


@FUZZ
@given(data=mutated(_jpeg()))
def test_camera_images(data: bytes) -> None:
    from drivetl.data.records import CameraImage

    img = CameraImage("FRONT", data, "jpeg")
    _run(img.size)
    _run(img.decode)


@pytest.mark.slow
def test_long_fuzz_run() -> None:
    """The same fuzz tests with 1,000 cases per reader (a few minutes)."""
    import subprocess
    import sys

    env = dict(os.environ, FUZZ_EXAMPLES="1000")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", __file__],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:]
