"""Fuzzing the readers of single files: point files (PCD, PLY, KITTI .bin, .npy, .npz), rig YAML,
team frame JSON, KITTI labels, adapter headers and camera images. Mutated copies of a valid file give
a result or a `DrivetlError` within bounded memory and time (the harness: `tests/fuzz/_harness.py`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._harness import FLEET_RIG, FUZZ, JSON_VALUES, jpeg, json_mutated, mutated, run_case


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
        run_case(read_points, path, size=len(data))

    check()


@FUZZ
@given(data=mutated(b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\n"
                    b"COUNT 1 1 1 1\nWIDTH 3\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA ascii\n"
                    b"1 2 3 0.5\n4 5 6 0.25\n7 8 9 1\n"))
def test_pcd_ascii_headers(tmp_path_factory, data: bytes) -> None:
    from drivetl.data.formats.pointfile import read_points

    path = tmp_path_factory.mktemp("pcd") / "x.pcd"
    path.write_bytes(data)
    run_case(read_points, path, size=len(data))


# ------------------------------------------------------------------------ rig, team JSON, KITTI


RIG_TEXT = FLEET_RIG.read_bytes()


@FUZZ
@given(data=mutated(RIG_TEXT))
def test_rig_yaml(tmp_path_factory, data: bytes) -> None:
    from drivetl.calib import load_rig

    path = tmp_path_factory.mktemp("rig") / "rig.yaml"
    path.write_bytes(data)
    run_case(load_rig, path, size=len(data))


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    from drivetl.calib import load_rig
    from drivetl.data.formats.team._example import write_example_team

    root = tmp_path_factory.mktemp("team") / "team"
    write_example_team(root, load_rig(FLEET_RIG), frames=1, seed=0)
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
            run_case(lambda: reader[0], size=len(data) + (1 << 16))
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
            run_case(lambda: team_reader[0], size=len(original) + (1 << 16))
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
    run_case(read_kitti_labels, path, size=len(data))


@FUZZ
@given(header=st.text(max_size=64) | st.just('{"format": 1}'))
def test_adapter_headers(tmp_path_factory, header: str) -> None:
    import torch
    from safetensors.torch import save_file

    from drivetl.models.adapters._export import META_KEY, read_adapter_metadata

    path = tmp_path_factory.mktemp("ad") / "a.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={META_KEY: header})
    run_case(read_adapter_metadata, path, size=path.stat().st_size)


@FUZZ
@given(data=mutated(jpeg()))
def test_camera_images(data: bytes) -> None:
    from drivetl.data.records import CameraImage

    img = CameraImage("FRONT", data, "jpeg")
    run_case(img.size, size=len(data))
    run_case(img.decode, size=len(data))
