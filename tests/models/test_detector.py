"""The detector end to end on synthetic batches: outputs, missing cameras, dropout, config building."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from drivetl.errors import ConfigError
from drivetl.models import BEVDetector, DetectorOutputs, instantiate

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "pretrain").glob("*.yaml"))


def test_outputs_and_nothing_stashed(make_detector, syn_batch) -> None:
    det = make_detector()
    before = set(vars(det))
    out = det(syn_batch, mask_ratio=0.3)
    assert isinstance(out, DetectorOutputs)
    assert set(vars(det)) == before
    assert out.heatmap.shape == (2, 4, 32, 32) and out.regression.shape == (2, 8, 32, 32)
    assert out.occupancy.shape == (2, 3, 32, 32) and out.camera_to_lidar.shape == (2, 16, 32, 32)
    assert out.camera.coverage.sum() > 0 and bool(out.lidar.mask.any())
    assert out.geometry.cell_x == 0.8 and out.geometry.x_min == -12.8


def test_missing_cameras_equal_dropped_cameras(make_detector, make_batch) -> None:
    det = make_detector(camera_dropout=1.0).eval()
    with_cams = make_batch()
    blind = dataclasses.replace(with_cams, camera_valid=torch.zeros_like(with_cams.camera_valid))
    no_view = make_batch(cameras=False)
    assert torch.equal(no_view.points, with_cams.points)  # the same LiDAR frames
    # eval (no dropout): the cameras change the output, so equal heatmaps below mean something.
    out_cams, out_blind, out_none = det(with_cams), det(blind), det(no_view)
    assert bool(out_cams.camera_kept.all())
    assert float(out_blind.camera.coverage.sum()) == 0.0
    assert not torch.allclose(out_cams.heatmap, out_blind.heatmap)
    # A batch whose cameras are all invalid and one without camera views give the same heatmaps.
    torch.testing.assert_close(out_none.heatmap, out_blind.heatmap, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_none.regression, out_blind.regression, rtol=0, atol=1e-6)
    # training with camera dropout 1.0: the camera branch is dropped for every frame, and the
    # outputs are those of the blind batch in the same mode.
    det.train()
    out_drop, out_blind_train = det(with_cams), det(blind)
    assert not bool(out_drop.camera_kept.any())
    torch.testing.assert_close(out_drop.heatmap, out_blind_train.heatmap, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_drop.fused, out_blind_train.fused, rtol=0, atol=1e-6)


def test_lidar_only_model(make_detector, make_batch) -> None:
    det = make_detector(camera=False)
    out = det(make_batch(cameras=False))
    assert out.camera is None and out.camera_to_lidar is None and out.heatmap.shape[1] == 4


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_build(path: Path) -> None:
    cfg = yaml.safe_load(path.read_text())
    det = instantiate(cfg["model"]["init_args"]["detector"])
    assert isinstance(det, BEVDetector)
    assert det.classes == ("vehicle", "pedestrian", "cyclist", "sign")


def test_instantiate_refuses_foreign_classes() -> None:
    with pytest.raises(ConfigError, match="not a detector component"):
        instantiate({"class_path": "os.system", "init_args": {"command": "true"}})
    with pytest.raises(ConfigError, match="cannot build"):
        instantiate({"class_path": "drivetl.models.LidarEncoder", "init_args": {"nonsense": 1}})
