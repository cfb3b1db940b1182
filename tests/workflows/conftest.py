"""Fixtures of the workflow tests: a tiny checkpoint exactly as `drivetl pretrain` writes it and a tiny
team folder of synthetic frames (with a test split), built once per module."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from drivetl.calib import load_rig
from drivetl.data.formats.team import write_team
from drivetl.data.records import CameraImage, FrameKey, FrameRecord, LidarPoints
from drivetl.data.synthetic import synthetic_cameras, synthetic_sample

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["x", "y", "z", "intensity", "elongation"]


def _calibrate_norms(det: torch.nn.Module, camera: bool) -> None:
    """BatchNorm statistics from two synthetic batches (AdaBN), so features have sane magnitudes."""
    from drivetl.data.collate import collate

    samples = [
        synthetic_sample(s, extent=11.0, num_boxes=5, ground_points=1500, cameras=camera) for s in (7, 8)
    ]
    batch = collate(
        samples, image_size=(48, 64) if camera else None, columns=COLUMNS, camera_names=None if camera else ()
    )
    for m in det.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    det.train()
    with torch.no_grad():
        det(batch)
    det.eval()


def write_checkpoint(
    path: Path, spec: dict, camera: bool = False, seed: int = 0, zero_camera: bool = False
) -> Path:
    """A checkpoint of the detector `spec` exactly as `drivetl pretrain` writes it (Lightning layout +
    drivetl metadata)."""
    from drivetl.models import instantiate
    from drivetl.models.checkpoint import detector_metadata

    torch.manual_seed(seed)
    det = instantiate(spec)
    _calibrate_norms(det, camera)
    with torch.no_grad():
        det.head.heatmap[-1].bias.fill_(-2.0)
        if zero_camera:  # the fusion's first conv ignores the camera channels entirely
            det.fusion.mix[0][0].weight[:, det.lidar.out_channels :] = 0
    seen = {
        "rigs": ["synthetic"],
        "columns": COLUMNS,
        "camera_names": ["FRONT", "SIDE_LEFT"] if camera else [],
        "image_size": [48, 64] if camera else None,
    }
    meta = detector_metadata(det, {"detector": spec}, seen)
    state = {f"model.{k}": v for k, v in det.state_dict().items()}
    torch.save({"state_dict": state, "drivetl": meta, "hyper_parameters": {"detector": spec}}, path)
    return path


def _rig(tmp: Path):
    """fleet_xt32's LiDAR with the two small synthetic cameras (what the synthetic frames were shot with)."""
    rig = load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml")
    return dataclasses.replace(rig, cameras=synthetic_cameras(64, 48))


def _jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_folder(root: Path, frames: int = 4, labels=None) -> Path:
    """A team folder of synthetic frames (points in the vehicle frame, uint8 intensity, two cameras).

    labels: optional {frame index: Boxes} replacing the frames' own labels."""
    rig = _rig(root)
    records = []
    for i in range(frames):
        s = synthetic_sample(100 + i, extent=11.0, num_boxes=5, ground_points=1500)
        pts = s.points.copy()
        pts[:, 3] = np.round(pts[:, 3] * 255)
        lidar = LidarPoints("TOP", pts, tuple(s.columns), "vehicle")
        cams = {n: CameraImage(n, _jpeg(img)) for n, img in s.images.items()}
        boxes = labels[i] if labels is not None else s.boxes
        key = FrameKey("seg0", 1_000_000 + i * 100_000)
        records.append((FrameRecord(key, rig, {"TOP": lidar}, cams, boxes), "test" if i % 2 else "train"))
    write_team(root, rig, records)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, detector_spec_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evaluate")
    spec = detector_spec_factory
    return {
        "data": write_folder(d / "fleet"),
        "lidar": write_checkpoint(d / "lidar.ckpt", spec(camera=False)),
        "fusion": write_checkpoint(d / "fusion.ckpt", spec(camera=True), camera=True, seed=1),
        "dir": d,
    }


@pytest.fixture(scope="session")
def fleet_files() -> SimpleNamespace:
    """``write_folder(root, frames=4, labels=None)`` and ``write_checkpoint(path, spec, ...)``."""
    return SimpleNamespace(write_folder=write_folder, write_checkpoint=write_checkpoint)
