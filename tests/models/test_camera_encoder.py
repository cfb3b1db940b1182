"""Camera encoder: batched projection equals the calibration model's; the lift follows the rig tensors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from drivetl.calib.camera import CameraModel
from drivetl.models import CameraEncoder, ImageBackbone
from drivetl.models.camera import project_points


def _camera(**kw) -> CameraModel:
    c, s = math.cos(0.3), math.sin(0.3)
    v = np.array([[c, -s, 0, 1.5], [s, c, 0, 0.2], [0, 0, 1, 1.7], [0, 0, 0, 1.0]])
    args = dict(
        name="FRONT",
        width=200,
        height=120,
        fx=110.0,
        fy=105.0,
        cx=98.0,
        cy=61.0,
        k1=-0.2,
        k2=0.05,
        p1=0.004,
        p2=-0.003,
        k3=0.0,
        vehicle_from_camera=v,
    )
    args.update(kw)
    return CameraModel(**args)


def _tensors(cam: CameraModel):
    k = torch.tensor(cam.K, dtype=torch.float32)[None, None]
    d = torch.tensor(cam.distortion, dtype=torch.float32)[None, None]
    cfv = torch.tensor(cam.camera_from_vehicle, dtype=torch.float32)[None, None]
    size = torch.tensor([[[cam.width, cam.height]]])
    return k, d, cfv, size


def test_projection_matches_camera_model() -> None:
    cam = _camera()
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(2, 30, 500), rng.uniform(-15, 15, 500), rng.uniform(-1, 3, 500)])
    uv_ref, depth_ref, ok_ref = cam.project(pts)
    uv, depth, ok = project_points(torch.tensor(pts, dtype=torch.float32), *_tensors(cam))
    ok = ok[0, 0].numpy()
    both = ok & ok_ref
    assert both.sum() > 100
    assert np.abs(uv[0, 0].numpy()[both] - uv_ref[both]).max() < 1e-2
    assert np.abs(depth[0, 0].numpy() - depth_ref).max() < 1e-3
    assert (ok != ok_ref).sum() <= 2  # only at the image border or the fov guard


def test_lift_coverage_follows_calibration() -> None:
    torch.manual_seed(0)
    enc = CameraEncoder(ImageBackbone((8, 8, 8), (1, 1, 1), 8, 8), heights=(0.5, 1.5), out_channels=8).eval()
    cam = _camera(k1=0.0, k2=0.0, p1=0.0, p2=0.0)
    k, d, cfv, size = _tensors(cam)

    class _B:  # the batch fields the encoder reads
        images = torch.rand(1, 1, 3, 120, 200)
        camera_valid = torch.ones(1, 1, dtype=torch.bool)
        camera_K, camera_distortion, camera_from_vehicle, image_size = k, d, cfv, size

    out = enc(_B, -20.0, -20.0, (1.0, 1.0), (40, 40))
    assert out.bev.shape == (1, 8, 40, 40) and out.coverage.shape == (1, 1, 40, 40)
    cov = out.coverage[0, 0]
    # the camera looks forward (+x, yawed 0.3 rad left): cells ahead are covered, cells behind are not
    assert cov[20, 35] == 1 and cov[20, 5] == 0
    # another rig (camera turned to look backwards) = other tensors = other coverage
    back = dataclasses.replace(
        cam, vehicle_from_camera=np.diag([-1.0, -1.0, 1.0, 1.0]) @ cam.vehicle_from_camera
    )
    _B.camera_from_vehicle = _tensors(back)[2]
    cov2 = enc(_B, -20.0, -20.0, (1.0, 1.0), (40, 40)).coverage[0, 0]
    assert cov2[20, 5] == 1 and cov2[20, 35] == 0
    # a missing camera: nothing covered
    _B.camera_valid = torch.zeros(1, 1, dtype=torch.bool)
    assert float(enc(_B, -20.0, -20.0, (1.0, 1.0), (40, 40)).coverage.sum()) == 0.0


def test_image_backbone_stride() -> None:
    bb = ImageBackbone((8, 16, 16), (1, 1, 1), 12, 8)
    assert bb(torch.rand(2, 3, 48, 64)).shape == (2, 12, 6, 8)
