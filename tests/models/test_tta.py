"""Flip test-time augmentation: mirrored maps come back as the mirrored boxes, the averaged
prediction is mirror-equivariant, and models it does not apply to are refused in one line."""

from __future__ import annotations

import math

import pytest
import torch

from drivetl.errors import ConfigError
from drivetl.models import BEVGeometry
from drivetl.models.heads._coding import BoxCoding
from drivetl.models.tta import TTA_MODES, check_tta, mirror_points, tta_forward, unmirror
from tests.models.conftest import small_batch, small_detector

GEO = BEVGeometry(-12.8, -12.8, 0.8, 0.8, 32, 32)


def _mirror_boxes(boxes: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Boxes (..., 7) of a frame mirrored in `axes`, in the frame as recorded."""
    out = boxes.clone()
    for axis in axes:
        out[..., axis] = -out[..., axis]
        out[..., 6] = (-out[..., 6]) if axis == 1 else (math.pi - out[..., 6])
    return out


def _all_boxes(reg: torch.Tensor, coding: BoxCoding) -> torch.Tensor:
    """(H * W, 7) the box every cell of reg (1, C, H, W) decodes to (class 0)."""
    c, h, w = reg.shape[1:]
    cells = torch.arange(h * w)[None]
    return coding.boxes(reg.view(1, c, -1), torch.zeros_like(cells), cells, GEO)[0]


def _same_heading(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi


@pytest.mark.parametrize("direction", [True, False], ids=["axis+front", "sin-cos"])
@pytest.mark.parametrize("axes", [(1,), (0,), (0, 1)], ids=["y", "x", "xy"])
def test_unmirrored_maps_decode_to_the_mirrored_boxes(direction: bool, axes) -> None:
    torch.manual_seed(1)
    coding = BoxCoding(torch.tensor([[4.7, 2.0, 1.7]]).log(), direction=direction)
    reg = torch.randn(1, coding.channels, 32, 32)
    reg[:, :2] = torch.rand(1, 2, 32, 32)  # offsets within the cell
    heat = torch.randn(1, 1, 32, 32)
    # the maps of a pass over the mirrored frame, brought back
    back_heat, back_reg = unmirror(heat, reg, coding, axes)
    expected = _mirror_boxes(_all_boxes(reg, coding), axes)  # each cell's box, mirrored
    got = _all_boxes(back_reg, coding)
    # cell (iy, ix) of the mirrored maps lands on its mirror cell
    idx = torch.arange(32 * 32).view(32, 32)
    for axis in axes:
        idx = idx.flip(1 - axis)
    got = got[idx.reshape(-1)]
    heat_at = back_heat.view(-1)[idx.reshape(-1)]
    torch.testing.assert_close(heat_at, heat.view(-1))
    torch.testing.assert_close(got[:, :6], expected[:, :6], atol=1e-4, rtol=0)
    assert _same_heading(got[:, 6], expected[:, 6]).abs().max() < 1e-4
    # unmirroring twice is the identity
    again = unmirror(back_heat, back_reg, coding, axes)
    torch.testing.assert_close(again[1], reg, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["flip", "double_flip"])
def test_tta_prediction_is_mirror_equivariant(mode: str) -> None:
    # the same scene mirrored gives the mirrored boxes: the views of a mirrored frame are the
    # views of the frame, so only a correct unmirror makes the two decodings agree
    det = small_detector(camera=False, size_priors=True, direction_classifier=True).eval()
    batch = small_batch(cameras=False)
    with torch.inference_mode():
        plain = tta_forward(det, batch, mode)
        mirrored = tta_forward(det, mirror_points(batch, (1,)), mode)
        one_pass = det(batch)
    # the views change the maps (a pass over the mirrored frame is not the mirror of this one)
    assert not torch.allclose(plain.heatmap, one_pass.heatmap, atol=1e-4)
    heat, reg = unmirror(mirrored.heatmap, mirrored.regression, mirrored.coding, (1,))
    torch.testing.assert_close(heat, plain.heatmap, atol=1e-4, rtol=0)
    torch.testing.assert_close(reg, plain.regression, atol=1e-4, rtol=0)
    # and the best box of each frame is the mirror image of the mirrored frame's best box
    best = zip(plain.detections(score_threshold=0.0), mirrored.detections(score_threshold=0.0), strict=True)
    for a, b in best:
        mb = _mirror_boxes(b.boxes[:1], (1,))
        torch.testing.assert_close(a.boxes[:1, :6], mb[:, :6], atol=1e-3, rtol=0)
        assert _same_heading(a.boxes[:1, 6], mb[:, 6]).abs().max() < 1e-3
        torch.testing.assert_close(a.scores[:1], b.scores[:1], atol=1e-5, rtol=0)


def test_none_is_one_plain_pass() -> None:
    det = small_detector(camera=False).eval()
    batch = small_batch(cameras=False)
    with torch.inference_mode():
        assert torch.equal(tta_forward(det, batch, "none").heatmap, det(batch).heatmap)
    assert TTA_MODES["double_flip"] == ((1,), (0,), (0, 1))


def test_models_it_does_not_apply_to_are_refused() -> None:
    check_tta("double_flip", GEO.bounds, has_camera=False)
    with pytest.raises(ConfigError, match="unknown test-time augmentation 'rotate'"):
        check_tta("rotate", GEO.bounds, has_camera=False)
    with pytest.raises(ConfigError, match="camera model"):
        check_tta("flip", GEO.bounds, has_camera=True)
    check_tta("none", GEO.bounds, has_camera=True)
    front_only = BEVGeometry(0.0, -12.8, 0.8, 0.8, 32, 64)  # x in [0, 51.2): y symmetric only
    check_tta("flip", front_only.bounds, has_camera=False)
    with pytest.raises(ConfigError, match=r"spans x in \[0, 51.2\) m, not symmetric"):
        check_tta("double_flip", front_only.bounds, has_camera=False)
