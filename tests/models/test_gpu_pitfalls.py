"""Mixed-precision and device pitfalls: bf16 autocast, non-blocking copies, the GPU's random state.

CPU autocast to bfloat16 stands in for ``bf16-mixed`` on a GPU: it sends linear layers, convolutions
and matrix products to bfloat16 the same way, so code that breaks or loses precision under CUDA
autocast shows it here too. The `gpu`-marked tests check the same on a CUDA device.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drivetl.data.collate import Batch
from drivetl.data.synthetic import synthetic_cameras
from drivetl.models.camera import project_points
from drivetl.models.lidar import _pillars
from drivetl.train.losses import total_loss

WEIGHTS = {"detection": 1.0, "occupancy": 0.5, "alignment": 0.5}
TINY_LIDAR_DETECTOR = {
    "class_path": "drivetl.models.BEVDetector",
    "init_args": {
        "classes": ["vehicle", "pedestrian", "cyclist", "sign"],
        "head_channels": 8,
        "lidar": {
            "class_path": "drivetl.models.LidarEncoder",
            "init_args": {
                "point_range": [-12.8, -12.8, -1.0, 12.8, 12.8, 5.0],
                "widths": [8, 8],
                "depths": [1, 1],
                "strides": [2, 2],
                "out_channels": 8,
            },
        },
    },
}


def _camera_tensors(width: int = 384, height: int = 256):
    cams = synthetic_cameras(width, height)
    k = torch.tensor(np.array([[[c.fx, 0, c.cx], [0, c.fy, c.cy], [0, 0, 1]] for c in cams]))[None]
    dist = torch.tensor([[c.k1, c.k2, c.p1, c.p2, c.k3] for c in cams])[None]
    cfv = torch.tensor(np.array([c.camera_from_vehicle for c in cams]))[None]
    size = torch.tensor([[width, height]] * len(cams))[None]
    return k.float(), dist.float(), cfv.float(), size


def test_projection_stays_float32_under_autocast() -> None:
    """Far points (Waymo range, 75 m) project to the same pixels with and without bf16 autocast."""
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(20000, 3, generator=g) * torch.tensor([150.0, 150.0, 3.0]) - torch.tensor(
        [75.0, 75.0, 0.0]
    )
    tensors = _camera_tensors()
    uv, depth, ok = project_points(pts, *tensors)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        uv_bf, depth_bf, ok_bf = project_points(pts, *tensors)
    assert uv_bf.dtype == torch.float32 and depth_bf.dtype == torch.float32
    assert int(ok.sum()) > 1000
    assert torch.equal(ok, ok_bf)
    assert float((uv - uv_bf)[ok].abs().max()) < 1e-3
    assert float((depth - depth_bf).abs().max()) < 1e-4


def test_projection_keeps_float64() -> None:
    k, dist, cfv, size = _camera_tensors()
    pts = torch.tensor([[20.0, 1.0, 1.0]], dtype=torch.float64)
    uv, depth, ok = project_points(pts, k.double(), dist.double(), cfv.double(), size)
    assert uv.dtype == torch.float64 and bool(ok[0, 0, 0])
    assert math.isclose(float(depth[0, 0, 0]), 19.5, abs_tol=1e-9)  # FRONT camera 0.5 m ahead


def test_bf16_autocast_train_step(make_detector, make_batch, monkeypatch) -> None:
    """Forward, losses and backward run under bf16 autocast; the pillar net hands the segment
    kernels float32 (the compiled CPU and CUDA kernels take float32/float64 only)."""
    seen: list[torch.dtype] = []
    real = _pillars.scatter_reduce

    def checked(values, index, n, reduce="mean", **kwargs):
        seen.append(values.dtype)
        assert values.dtype in (torch.float32, torch.float64), f"segment kernel got {values.dtype}"
        return real(values, index, n, reduce, **kwargs)

    monkeypatch.setattr(_pillars, "scatter_reduce", checked)
    det = make_detector()
    batch = make_batch()
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = det(batch, mask_ratio=0.3)
        loss, terms = total_loss(out, batch, WEIGHTS)
    assert out.heatmap.dtype == torch.bfloat16  # autocast really was on
    assert seen and loss.dtype == torch.float32
    assert all(torch.isfinite(t) for t in terms.values()), terms
    loss.backward()
    grads = [p.grad for p in det.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert det.lidar.pfn.layers[0]["linear"].weight.grad is not None


def test_camera_coverage_same_under_autocast(make_detector, make_batch) -> None:
    det = make_detector().eval()
    batch = make_batch()
    with torch.no_grad():
        ref = det(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = det(batch)
    assert torch.equal(ref.camera.coverage, mixed.camera.coverage.float())
    assert float(ref.camera.coverage.sum()) > 0


@pytest.mark.parametrize("device, non_blocking", [("cpu", False), ("cuda", True)])
def test_data_module_copies_batches_non_blocking(
    make_batch, monkeypatch, device: str, non_blocking: bool
) -> None:
    """Lightning passes non_blocking only to plain tensors; the data module passes it to `Batch.to`."""
    from drivetl.data.datamodule import DriveDataModule

    calls = []

    def fake_to(self, dev, non_blocking=False):
        calls.append((dev, non_blocking))
        return self

    monkeypatch.setattr(Batch, "to", fake_to)
    batch = make_batch()
    dm = DriveDataModule(root="unused")
    assert dm.transfer_batch_to_device(batch, torch.device(device), 0) is batch
    assert calls == [(torch.device(device), non_blocking)]
    assert dm.transfer_batch_to_device({"x": torch.zeros(1)}, torch.device("cpu"), 0)["x"].shape == (1,)


@pytest.mark.gpu
def test_validation_step_leaves_cuda_rng_alone(make_batch) -> None:
    """Validation seeds its own mask draw; the GPU generator that training draws from is restored."""
    from drivetl.train import PretrainModule

    module = PretrainModule(TINY_LIDAR_DETECTOR, {"detection": 1.0, "occupancy": 1.0}).cuda()
    batch = make_batch(cameras=False).to("cuda")
    torch.cuda.manual_seed(1234)
    state = torch.cuda.get_rng_state()
    with torch.no_grad():
        module.validation_step(batch, 0)
    assert torch.equal(torch.cuda.get_rng_state(), state)


@pytest.mark.gpu
def test_bf16_train_step_on_cuda(make_detector, make_batch) -> None:
    """The real thing behind the CPU proxy above: bf16 autocast forward, losses, backward on CUDA."""
    det = make_detector().cuda()
    batch = make_batch().to("cuda", non_blocking=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = det(batch, mask_ratio=0.3)
        loss, terms = total_loss(out, batch, WEIGHTS)
    assert out.heatmap.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert all(bool(torch.isfinite(t)) for t in terms.values()), terms
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in det.parameters() if p.grad is not None)
