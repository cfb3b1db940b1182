"""Fuzzing the readers of logs and dataset folders: ROS 1 bags, MCAP, Argoverse 2 logs and TRI DGP
scenes. Mutated copies of a valid log or of one file of a folder give a result or a `DrivetlError`
within bounded memory and time (the harness: `tests/fuzz/_harness.py`)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from tests.fuzz._harness import FLEET_RIG, FUZZ, fuzz_folder, jpeg, mutated, ring_points, run_case


@functools.cache
def _log_seed(container: str):
    """(bytes, topics, rig) of a two-frame log: fleet_xt32's LiDAR (points on its beams) and a
    16 x 12 camera, written the way a car's drivers publish them."""
    import tempfile

    from drivetl.calib import load_rig
    from drivetl.data.formats.bag import write_log
    from drivetl.data.records import CameraImage, FrameKey, FrameRecord, LidarPoints
    from drivetl.data.synthetic import synthetic_cameras

    rig = dataclasses.replace(load_rig(FLEET_RIG), cameras=synthetic_cameras(16, 12)[:1])
    lidar, cam = rig.lidars[0], rig.cameras[0]
    xyz = ring_points(lidar.inclinations, 12)
    pts = np.column_stack([xyz, np.full(len(xyz), 100.0)]).astype(np.float32)
    records = [
        FrameRecord(
            FrameKey("log", 1_000_000 + 100_000 * i),
            rig,
            {lidar.name: LidarPoints(lidar.name, pts, ("x", "y", "z", "intensity"), "sensor")},
            {cam.name: CameraImage(cam.name, jpeg(16, 12))},
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
        run_case(read, data, size=len(data))

    check()


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
        xyz = ring_points(inc, 8)
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


def test_argoverse2_logs(tmp_path_factory) -> None:
    from drivetl.data.formats.av2 import Av2Log

    files = _av2_seed()
    root = tmp_path_factory.mktemp("av2") / "log"

    def read() -> int:
        log = Av2Log(root)
        return sum(len(log.read(ts)[0].boxes) for ts in log.sweeps)

    fuzz_folder(root, files, read, 2)


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
    fuzz_folder(work / "scene", files, read, 2, json_names=texts)
