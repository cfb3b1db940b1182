"""LoRA, bottleneck adapters, rig-conditioned FiLM and the rig descriptor, on small generic models."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from drivetl.calib import (
    CameraModel,
    IntensityEncoding,
    LidarModel,
    SensorRig,
    make_transform,
    rotation_from_rpy,
)
from drivetl.errors import ConfigError, RigError
from drivetl.models.adapters import (
    RIG_FIELDS,
    LoRAConv1d,
    LoRAConv2d,
    LoRALinear,
    RigEmbedding,
    StageWithAdapter,
    apply_freezing,
    apply_lora,
    arch_signature,
    count_parameters,
    film_condition,
    insert_adapters,
    insert_film,
    merge_lora,
)


class TinyBEV(nn.Module):
    """Encoder stages over a (B, 4, 8, 8) BEV map, a Conv1d mixer and a head; output (B, N)."""

    def __init__(self, classes: int = 3, width: int = 8) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())

        self.encoders = nn.Sequential(OrderedDict(
            stem=block(4, w), stage1=block(w, w), stage2=block(w, 2 * w, 2),
        ))
        self.mixer = nn.Conv1d(2 * w, 2 * w, 1)
        self.head = nn.ModuleDict({
            "heatmap": nn.Conv2d(2 * w, classes, 1),
            "box": nn.Conv2d(2 * w, 2 * classes, 1),
            "cls": nn.Linear(2 * w, classes),
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoders(x)
        f = f + self.mixer(f.flatten(2)).view_as(f)
        heat, box = self.head["heatmap"](f), self.head["box"](f)
        return torch.cat([heat.flatten(1), box.flatten(1), self.head["cls"](f.mean((2, 3)))], 1)


def _model(seed: int = 0) -> TinyBEV:
    torch.manual_seed(seed)
    return TinyBEV().eval()


def _x(seed: int = 1, b: int = 2) -> torch.Tensor:
    return torch.randn(b, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _randomize(model: nn.Module, word: str) -> None:
    """Give the zero-initialized adapter tensors (names containing `word`) random values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if word in name:
                p.normal_(0.0, 0.1)


# ---------------------------------------------------------------------------------------------- LoRA
def test_lora_identity_at_init_and_types() -> None:
    model = _model()
    x = _x()
    before = model(x)
    sig = arch_signature(model)
    names = apply_lora(model, ["encoders.*.0", "mixer", "head.cls"], rank=2, alpha=4)
    assert names == ["encoders.stem.0", "encoders.stage1.0", "encoders.stage2.0", "mixer", "head.cls"]
    assert isinstance(model.encoders.stem[0], LoRAConv2d)
    assert isinstance(model.mixer, LoRAConv1d)
    assert isinstance(model.head["cls"], LoRALinear)
    assert torch.equal(model(x), before)
    assert arch_signature(model) == sig  # the base keys and shapes are unchanged
    assert "encoders.stem.0.weight" in model.state_dict()


def test_lora_regex_and_block_targets() -> None:
    model = _model()
    names = apply_lora(model, ["re:encoders\\.stage[12]"], rank=1)
    assert names == ["encoders.stage1.0", "encoders.stage2.0"]
    with pytest.raises(ConfigError, match="nothing_here"):
        apply_lora(_model(), ["nothing_here.*"], rank=2)


def test_lora_merge_is_equivalent() -> None:
    model = _model()
    apply_lora(model, ["*"], rank=3, alpha=6)
    _randomize(model, "lora_")
    x = _x()
    adapted = model(x)
    assert not torch.allclose(adapted, _model()(x))
    merged_names = merge_lora(model)
    assert len(merged_names) == 7
    assert not any("lora" in k for k in model.state_dict())
    assert type(model.head["cls"]) is nn.Linear and type(model.mixer) is nn.Conv1d
    torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=0)


def test_lora_dropout_branch_and_grouped_conv() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=2)
    model = nn.Sequential(conv).train()
    apply_lora(model, ["0"], rank=2, dropout=0.5)
    _randomize(model, "lora_B")
    x = _x()[:, :4].repeat(1, 2, 1, 1)
    model.eval()
    eval_out = model(x)
    model.train()
    torch.manual_seed(3)
    train_out = model(x)  # dropout on the LoRA branch only
    assert not torch.allclose(train_out, eval_out)
    model.eval()
    merge_lora(model)
    torch.testing.assert_close(model(x), eval_out, atol=1e-5, rtol=0)


def test_only_lora_parameters_train(sgd_step) -> None:
    model = _model()
    apply_lora(model, ["encoders.*.0", "head.*"], rank=2)
    count = apply_freezing(model, "adapters+head")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    lora_numel = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    trainable_n, total, share = count
    assert trainable_n == lora_numel
    assert total == sum(p.numel() for p in model.parameters())
    assert share == pytest.approx(lora_numel / total)
    # A training step changes only LoRA tensors.
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lr = 0.1
    model.train()
    model(_x()).pow(2).mean().backward()
    sgd_step(model, lr)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


# ------------------------------------------------------------------------------------- bottleneck
def test_bottleneck_adapter_identity_and_learning(sgd_step) -> None:
    model = _model()
    x = _x()
    before = model(x)
    names = insert_adapters(model, ["encoders.stage1", "encoders.stage2"], reduction=4)
    assert names == ["encoders.stage1", "encoders.stage2"]
    assert isinstance(model.encoders.stage2, StageWithAdapter)
    assert model.encoders.stage2.adapter.channels == 16  # read from the stage's last BatchNorm
    assert model.encoders.stage2.adapter.hidden == 4
    assert torch.equal(model(x), before)
    count = apply_freezing(model, "adapters+head", head_prefixes=["head"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith("head.") or ".adapter." in n for n in trainable)
    assert count.share < 0.5
    lr = 1e-2
    model.train()
    model(x).pow(2).mean().backward()
    sgd_step(model, lr)
    model.eval()
    assert not torch.allclose(model(x), before)


def test_adapter_channels_explicit_and_errors() -> None:
    model = nn.Sequential(nn.ReLU(), nn.Identity())
    with pytest.raises(ConfigError, match="output channels"):
        insert_adapters(model, ["0"])
    insert_adapters(model, ["0"], channels={"0": 4})
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(model(x), x.relu())


# ------------------------------------------------------------------------------------------- rigs
def _rig(name: str, beams: int, lo_deg: float, hi_deg: float, height: float, pitch_deg: float,
         encoding: str, fx: float) -> SensorRig:
    lidar = LidarModel(
        name="TOP", model="test", columns=1000, max_range=100.0,
        vehicle_from_lidar=make_transform(
            rotation_from_rpy(0.0, math.radians(pitch_deg), 0.3), [1.0, 0.0, height]
        ),
        inclinations=LidarModel.uniform_inclinations(beams, math.radians(lo_deg), math.radians(hi_deg)),
        intensity=IntensityEncoding(kind=encoding, max_value=255.0 if encoding == "uint8" else 1.0),
    )
    camera = CameraModel(name="FRONT", width=1920, height=1080, fx=fx, fy=fx, cx=960.0, cy=540.0,
                         vehicle_from_camera=make_transform(np.eye(3), [1.5, 0.0, 1.6]))
    return SensorRig(name=name, lidars=(lidar,), cameras=(camera,))


SOURCE = _rig("source", 64, -17.6, 2.4, 2.2, 0.0, "float", 1000.0)
TARGET = _rig("target", 32, -16.0, 15.0, 1.9, 2.0, "uint8", 800.0)


def test_rig_embedding_describes_rig() -> None:
    emb = RigEmbedding()
    d = emb.describe(TARGET)
    assert d["lidar.beam_count"] == 32
    assert d["lidar.height_m"] == pytest.approx(1.9)
    assert d["lidar.pitch_deg"] == pytest.approx(2.0)  # mounting yaw does not leak into pitch
    assert d["lidar.roll_deg"] == pytest.approx(0.0, abs=1e-9)
    assert d["lidar.inclination_spacing_deg"] == pytest.approx(31.0 / 32)
    assert (d["lidar.intensity_uint8"], d["lidar.intensity_float"]) == (1.0, 0.0)
    assert d["camera.hfov_deg"] == pytest.approx(math.degrees(2 * math.atan(960 / 800)))
    vec = emb([SOURCE, TARGET])
    assert vec.shape == (2, len(RIG_FIELDS)) and vec.dtype == torch.float32
    assert vec.abs().max() <= 1.5  # normalized
    assert not torch.equal(vec[0], vec[1])
    no_camera = SensorRig(name="lidar only", lidars=TARGET.lidars)
    row = emb(no_camera)[0]
    assert row[RIG_FIELDS.index("camera.present")] == 0 and row[RIG_FIELDS.index("camera.hfov_deg")] == 0
    with pytest.raises(RigError, match="REAR"):
        RigEmbedding(lidar="REAR")(TARGET)


def test_film_identity_at_init_then_rig_dependent(sgd_step) -> None:
    model = _model()
    x = _x(b=1)
    before = model(x)
    emb = RigEmbedding()
    insert_film(model, ["encoders.stage1", "encoders.stage2"], cond_dim=emb.dim, hidden=16)
    with film_condition(emb(SOURCE)):
        assert torch.equal(model(x), before)
    with film_condition(emb(TARGET)):
        assert torch.equal(model(x), before)
    with pytest.raises(RuntimeError, match="film_condition"):
        model(x)  # the condition does not outlive its block

    apply_freezing(model, "adapters+head", head_prefixes=["head"])
    lr = 0.5
    model.train()
    with film_condition(emb([SOURCE, TARGET])):
        model(torch.cat([x, x])).pow(2).mean().backward()
    sgd_step(model, lr)
    model.eval()
    with film_condition(emb(SOURCE)):
        out_source = model(x)
    with film_condition(emb(TARGET)):
        out_target = model(x)
    assert not torch.allclose(out_source, out_target)
    assert count_parameters(model).trainable < count_parameters(model).total
