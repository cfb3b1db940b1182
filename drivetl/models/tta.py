"""Flip test-time augmentation: the detector also sees each frame mirrored, and the output maps of
every pass, mirrored back, are averaged before decoding.

CenterPoint's Waymo entries evaluate this way ("double flip": the frame as recorded, mirrored left to
right, front to back, and both). A mirrored street is as plausible as the recorded one when the BEV
grid is symmetric about the mirror axis and the LiDAR sits on the vehicle's centre line; each pass
sees a different sampling of the same objects, and the average of their maps placed the demo's
boxes better than one pass did (its numbers: docs/evaluate.md). It costs one forward pass per
view. Camera models are refused: their images would have to be mirrored with their calibration.

How a mirrored pass's maps come back (`unmirror`): the maps are flipped along the mirrored grid
axes, the centre offsets within the cell ``d`` become ``1 - d`` on a mirrored axis, the heading
θ becomes -θ (mirrored in y), π - θ (in x) or θ + π (both), so ``sin 2θ`` changes sign after one
mirror, and the direction logit (`drivetl.models.heads.BoxCoding`: the front lies within 90 degrees
of `DIRECTION_AXIS`) keeps or changes its sign as the axis's ``cos 2θ`` says; z, sizes, class and
IoU-score channels are unchanged. Heatmaps are averaged as probabilities, regressions as numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from drivetl.data.collate import Batch
from drivetl.errors import ConfigError
from drivetl.models.detector import DetectorOutputs
from drivetl.models.heads._coding import BoxCoding

__all__ = [
    "TTA_MODES",
    "TTA_VIEWS_TEXT",
    "check_model_tta",
    "check_tta",
    "mirror_points",
    "tta_forward",
    "unmirror",
]

#: mode -> the mirrored views besides the frame as recorded (axes: 0 = x, front to back; 1 = y,
#: left to right)
TTA_MODES: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": (),
    "flip": ((1,),),
    "double_flip": ((1,), (0,), (0, 1)),
}
#: how a report names each mode's views
TTA_VIEWS_TEXT: dict[str, str] = {
    "none": "none (one pass per frame)",
    "flip": "flip (2 passes: as recorded, mirrored left to right; output maps averaged)",
    "double_flip": (
        "double flip (4 passes: as recorded, mirrored left to right, front to back, and both; "
        "output maps averaged)"
    ),
}


def check_tta(
    mode: str, bounds: tuple[float, float, float, float], has_camera: bool, where: str = "--tta"
) -> None:
    """Raise `ConfigError` unless `mode` is known and applies to a model whose BEV grid covers
    `bounds` (x_min, y_min, x_max, y_max metres): the grid must be symmetric about every mirrored
    axis, and the model LiDAR-only."""
    if mode not in TTA_MODES:
        raise ConfigError(f"{where}: unknown test-time augmentation {mode!r}; choose from {list(TTA_MODES)}")
    axes = {a for view in TTA_MODES[mode] for a in view}
    if not axes:
        return
    if has_camera:
        raise ConfigError(
            f"{where} {mode}: test-time flips mirror the LiDAR points only; a camera model would need "
            "its images mirrored too. Evaluate camera models with --tta none"
        )
    x0, y0, x1, y1 = (float(v) for v in bounds)
    for axis, lo, hi, name in ((0, x0, x1, "x"), (1, y0, y1, "y")):
        if axis in axes and not math.isclose(lo, -hi, abs_tol=1e-6):
            raise ConfigError(
                f"{where} {mode}: the model's BEV grid spans {name} in [{lo:g}, {hi:g}) m, not symmetric "
                f"about {name} = 0, so a mirrored frame falls outside it; use --tta none"
            )


def check_model_tta(mode: str, model, where: str = "--tta") -> None:
    """`check_tta` for a detector (a `BEVDetector` or an adapted one): its BEV grid and whether it
    has a camera branch."""
    check_tta(mode, model.geometry.bounds, getattr(model, "camera", None) is not None, where)


def mirror_points(batch: Batch, axes: tuple[int, ...]) -> Batch:
    """`batch` with its points' coordinates `axes` (0: x, 1: y) negated (boxes left as they are:
    only the forward pass sees the mirrored frame)."""
    if not axes:
        return batch
    points = batch.points.clone()
    for axis in axes:
        col = batch.columns.index("xy"[axis])
        points[:, col] = -points[:, col]
    return dataclasses.replace(batch, points=points)


def unmirror(
    heatmap: torch.Tensor, regression: torch.Tensor, coding: BoxCoding, axes: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The maps (B, K, H, W) and (B, C, H, W) of a pass over points mirrored in `axes`, in the frame
    as recorded (see the module docstring)."""
    if not axes:
        return heatmap, regression
    dims = [3 - axis for axis in axes]  # x runs along the width (dim 3), y along the height (dim 2)
    heatmap = heatmap.flip(dims)
    reg = regression.flip(dims).clone()
    for axis in axes:
        reg[:, axis] = 1.0 - reg[:, axis]
    both = len(set(axes)) == 2
    if coding.direction:
        if not both:
            reg[:, 6] = -reg[:, 6]  # sin 2θ
            sign = torch.sign(reg[:, 7])  # cos 2θ: does the mirror keep the front's side?
            reg[:, 8] = reg[:, 8] * (sign if axes == (1,) else -sign)
        else:
            reg[:, 8] = -reg[:, 8]
    else:  # sin θ, cos θ
        if 1 in axes:
            reg[:, 6] = -reg[:, 6]
        if 0 in axes:
            reg[:, 7] = -reg[:, 7]
    return heatmap, reg


def tta_forward(
    forward: Callable[[Batch], DetectorOutputs], batch: Batch, mode: str = "double_flip"
) -> DetectorOutputs:
    """`forward(batch)` with the heatmap and regression averaged over the views of `mode` (the other
    fields are those of the pass over the frame as recorded). Check the model with `check_tta`."""
    out = forward(batch)
    views = TTA_MODES[mode]
    if not views:
        return out
    prob = out.heatmap.float().sigmoid()
    reg = out.regression.float().clone()
    for axes in views:
        o = forward(mirror_points(batch, axes))
        h, r = unmirror(o.heatmap.float(), o.regression.float(), o.coding, axes)
        prob = prob + h.sigmoid()
        reg = reg + r
    n = len(views) + 1
    heat = torch.logit((prob / n).clamp(1e-6, 1 - 1e-6))
    return dataclasses.replace(
        out, heatmap=heat.to(out.heatmap.dtype), regression=(reg / n).to(out.regression.dtype)
    )
