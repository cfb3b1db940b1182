"""The exportable detector: adapters resolved into plain layers, BatchNorm folded, pillars in, maps out.

`plain_detector(model, rig_vector)` returns a copy of a (possibly adapted) LiDAR-only `BEVDetector`
in which

- every LoRA update is merged into its base weight (`merge_lora`): plain Linear/Conv layers;
- every FiLM stage, conditioned on the one rig the export is for, becomes the stage followed by a
  constant per-channel scale and shift (`ChannelAffine`);
- every domain norm becomes its active BatchNorm; every bottleneck adapter a plain residual layer
  after its stage (its maths cannot be merged into the stage's weights);
- every BatchNorm directly after a Conv2d or Linear (nothing in between) is folded into that layer's
  weight and bias, which is exact in eval mode (`fold_batchnorm`).

`PillarGraph(plain)` is the graph that is exported: it starts from the per-point features and
point -> pillar index the pre-processing builds (`drivetl.workflows._pillar_input`) and returns the
head's heatmap logits and regression maps. Decoding and NMS stay outside the graph
(`drivetl.workflows._onnx_decode`, numpy).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from drivetl.errors import ConfigError
from drivetl.models._keys import set_module
from drivetl.models.adapters import (
    DomainBatchNorm,
    StageWithAdapter,
    StageWithFiLM,
    merge_lora,
)
from drivetl.models.detector import add_ground
from drivetl.models.lidar import ground_relative, height_stats

__all__ = ["ChannelAffine", "PillarGraph", "adapter_leftovers", "fold_batchnorm", "plain_detector"]


class ChannelAffine(nn.Module):
    """``y = x * scale + shift`` per channel of (B, C, ...) features; scale/shift (C,) constants."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().float())
        self.register_buffer("shift", shift.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.scale.view(view) + self.shift.view(view)


class _Residual(nn.Module):
    """``x + f(x)``: a bottleneck adapter as a plain residual layer."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.movedim(1, -1)
        return x + self.inner(h).movedim(-1, 1)


def _resolve_adapters(model: nn.Module, rig_vector: torch.Tensor | None) -> list[str]:
    """Replace adapter modules (FiLM, bottleneck, domain norms) by plain ones, in place."""
    done = []
    for name, mod in list(model.named_modules()):
        if not name:
            continue
        if isinstance(mod, StageWithFiLM):
            if rig_vector is None:
                raise ConfigError(
                    f"the model has rig-conditioned FiLM ({name}); name the rig the export is for "
                    "(--rig rig.yaml) so its FiLM scale and shift are fixed"
                )
            with torch.no_grad():
                scale, shift = mod.film.scale_shift(rig_vector.float().view(1, -1))
            plain: nn.Module = nn.Sequential(mod.stage, ChannelAffine(scale[0], shift[0]))
        elif isinstance(mod, StageWithAdapter):
            a = mod.adapter
            plain = nn.Sequential(mod.stage, _Residual(nn.Sequential(a.down, a.act, a.up)))
        elif isinstance(mod, DomainBatchNorm):
            plain = mod.norms[mod.active]
        else:
            continue
        set_module(model, name, plain)
        done.append(name)
    return done


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold each eval-mode BatchNorm that directly follows a Conv2d/Linear into it, in place.

    Pairs: consecutive children of an `nn.Sequential`, ``conv2``/``bn2`` of a residual block and
    ``linear``/``norm`` of a pillar-net layer. Returns the folded BatchNorm names (now Identity)."""
    folded = []
    for name, mod in list(model.named_modules()):
        pairs: list[tuple[str, str]] = []
        if isinstance(mod, nn.Sequential):
            keys = list(mod._modules)
            pairs = list(zip(keys[:-1], keys[1:], strict=True))
        else:
            pairs = [p for p in (("conv2", "bn2"), ("linear", "norm")) if all(k in mod._modules for k in p)]
        for a, b in pairs:
            layer, bn = mod._modules[a], mod._modules[b]
            if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
                continue
            if type(layer) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d):
                fused = fuse_conv_bn_eval(layer.eval(), bn.eval())
            elif type(layer) is nn.Linear and isinstance(bn, nn.BatchNorm1d):
                fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
            else:
                continue
            mod._modules[a] = fused
            mod._modules[b] = nn.Identity()
            folded.append(f"{name}.{b}" if name else b)
    return folded


def plain_detector(model: nn.Module, rig_vector: torch.Tensor | None = None) -> tuple[nn.Module, dict]:
    """A plain, folded, eval-mode copy of `model` (see the module docstring) and what was done."""
    if getattr(model, "camera", None) is not None:
        raise ConfigError(
            "ONNX export covers LiDAR-only detectors; this checkpoint has a camera branch "
            "(export a LiDAR-only model, or run the camera model with `drivetl predict --ckpt`)"
        )
    plain = copy.deepcopy(model).cpu().float().eval()
    plain.occupancy_head = None
    plain.align_head = None
    merged = merge_lora(plain)
    resolved = _resolve_adapters(plain, rig_vector)
    folded = fold_batchnorm(plain)
    for p in plain.parameters():
        p.requires_grad_(False)
    left = adapter_leftovers(plain)
    if left:
        raise ConfigError(f"adapter modules left after merging: {left[:3]}")
    return plain, {"lora_merged": merged, "adapters_resolved": resolved, "batchnorm_folded": len(folded)}


def adapter_leftovers(model: nn.Module) -> list[str]:
    """Names of modules or tensors of `model` that still belong to an adapter (empty once plain)."""
    from drivetl.models.adapters import METHODS

    kinds = tuple(c for m in METHODS.values() for c in (m.modules or ()))
    out = [n for n, m in model.named_modules() if isinstance(m, kinds)]
    out += [k for k in model.state_dict() if "lora_" in k or ".film." in k]
    return out


class PillarGraph(nn.Module):
    """The exported computation for one frame: point features and their pillars -> (heatmap, regression).

    forward(features (N, F) float32, pillar_index (N,) int64 each point's row of coords, coords (P, 2)
    int64 ``(iy, ix)`` pillar cells) -> heatmap logits (1, classes, H, W), regression (1, C, H, W). F is
    the pillar net's input: x, y, z, intensity (+ elongation), the point minus its pillar's point mean
    (3), the point's x, y minus its pillar's centre (2); see `drivetl.workflows._pillar_input`.

    Each pillar-net layer runs per point (Linear with its BatchNorm folded, ReLU); the pillar max is a
    scatter-max into a zero (P, C) tensor, exact because every value after the ReLU is >= 0 and every
    pillar has a point. Memory grows with N x C, never with P x (largest pillar). An encoder with
    `height_features` appends each pillar's highest and lowest z and log point count, computed by the
    same `height_stats` as the torch model from the features' z column; one with a `ground_window`
    makes them heights above the local ground and adds that ground to the z map, as the torch model
    does (`ground_relative`, `add_ground`).
    """

    def __init__(self, plain: nn.Module):
        super().__init__()
        lidar = plain.lidar
        self.layers = nn.ModuleList(
            nn.Sequential(layer["linear"], layer["norm"]) for layer in lidar.pfn.layers
        )
        self.widths = [int(layer["linear"].out_features) for layer in lidar.pfn.layers]
        self.backbone = lidar.backbone
        self.neck = lidar.neck
        self.head = plain.head
        nx, ny, _ = lidar.grid.grid_shape
        self.nx, self.ny = int(nx), int(ny)
        self.channels = int(lidar.pfn.out_channels)
        self.height_features = bool(getattr(lidar, "height_features", False))
        self.z_range = (float(lidar.grid.point_range[2]), float(lidar.grid.point_range[5]))
        self.ground_window = int(getattr(lidar, "ground_window", 0))
        self.out_stride = int(lidar.out_stride)

    def forward(
        self, features: torch.Tensor, pillar_index: torch.Tensor, coords: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the class docstring."""
        x = features
        p = coords.shape[0]
        pooled = x.new_zeros((p, self.channels))
        for i, (layer, width) in enumerate(zip(self.layers, self.widths, strict=True)):
            x = torch.relu(layer(x))
            index = pillar_index.unsqueeze(1).expand(-1, width)
            pooled = x.new_zeros((p, width)).scatter_reduce(0, index, x, "amax", include_self=True)
            if i + 1 < len(self.layers):
                x = torch.cat([x, pooled[pillar_index]], 1)
        cell = coords[:, 0] * self.nx + coords[:, 1]
        ground = None
        if self.height_features:
            # features column 2 is the point's z (`_pillar_input`)
            stats = height_stats(features[:, 2], pillar_index, p, self.z_range)
            if self.ground_window:
                shape = (1, self.ny, self.nx)
                stats, ground = ground_relative(stats, cell, shape, self.ground_window, self.out_stride)
            pooled = torch.cat([pooled, stats], 1)
        canvas = pooled.new_zeros((self.ny * self.nx, pooled.shape[1])).index_copy(0, cell, pooled)
        canvas = canvas.view(1, self.ny, self.nx, -1).permute(0, 3, 1, 2).contiguous()
        heatmap, regression = self.head(self.neck(self.backbone(canvas)))
        return heatmap, add_ground(regression, ground)
