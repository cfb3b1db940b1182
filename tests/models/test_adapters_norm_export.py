"""BatchNorm re-estimation, per-domain norms, freezing policies and adapter export/import."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from drivetl.errors import CheckpointError, ConfigError
from drivetl.models.adapters import (
    DomainBatchNorm,
    RigEmbedding,
    apply_freezing,
    apply_lora,
    arch_signature,
    base_key,
    convert_domain_norms,
    count_parameters,
    film_condition,
    frozen_norms_eval,
    insert_adapters,
    insert_film,
    load_adapters,
    parameter_table,
    read_adapter_metadata,
    reestimate_batchnorm,
    save_adapters,
    set_domain,
)


def _net(seed: int = 0, width: int = 16) -> nn.Module:
    """A BEV-like backbone with three stages and a head; (B, 4, 8, 8) -> (B, 3, 4, 4)."""
    torch.manual_seed(seed)

    def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    w = width
    return nn.Sequential(OrderedDict(
        encoders=nn.Sequential(OrderedDict(stem=block(4, w), stage1=block(w, w), stage2=block(w, w, 2),
                                           stage3=block(w, w))),
        head=nn.Sequential(nn.Conv2d(w, w, 3, 1, 1), nn.ReLU(), nn.Conv2d(w, 3, 1)),
    )).eval()


def _batches(n: int, seed: int, shift: float = 0.0, b: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 4, 8, 8, generator=g) * 2.0 + shift for _ in range(n)]


# ---------------------------------------------------------------------------------- normalization
def test_reestimate_batchnorm_matches_direct_statistics() -> None:
    model = _net()
    model.encoders.stem[1].momentum = 0.3
    target = _batches(5, seed=2, shift=1.5)
    stem_conv = model.encoders.stem[0]
    with torch.no_grad():
        feats = [stem_conv(x) for x in target]  # the first BatchNorm's inputs
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    expected_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)

    # Inputs of every BatchNorm as seen during re-estimation (train-mode normalization upstream).
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen.setdefault(n, []).append(inp[0]))
             for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    used = reestimate_batchnorm(model, target)
    for h in hooks:
        h.remove()
    assert used == 5
    bn = model.encoders.stem[1]
    torch.testing.assert_close(bn.running_mean, expected_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, expected_var, atol=1e-5, rtol=1e-5)
    assert bn.momentum == 0.3 and not model.training and not bn.training  # restored
    deep = model.encoders.stage3[1]
    xs = seen["encoders.stage3.1"]
    torch.testing.assert_close(deep.running_mean, torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="no batches"):
        reestimate_batchnorm(model, [])


def test_reestimate_custom_forward_and_untouched_layers() -> None:
    model = _net()
    before = model.encoders.stage3[1].running_mean.clone()
    calls = []

    def forward_fn(m: nn.Module, batch: dict) -> torch.Tensor:
        calls.append(1)
        return m.encoders.stage1(m.encoders.stem(batch["x"]))  # stage2/3 never run

    n = reestimate_batchnorm(model, ({"x": x} for x in _batches(10, 3)), forward_fn, max_batches=3)
    assert n == 3 and len(calls) == 3
    assert torch.equal(model.encoders.stage3[1].running_mean, before)
    assert not torch.equal(model.encoders.stem[1].running_mean, torch.zeros(16))


def test_domain_batchnorm_switches_statistics() -> None:
    model = _net()
    x = _batches(1, 5)[0]
    source_out = model(x)
    sig = arch_signature(model)
    names = convert_domain_norms(model, ["waymo", "fleet"], targets=["encoders.*"])
    assert len(names) == 4 and isinstance(model.encoders.stem[1], DomainBatchNorm)
    assert arch_signature(model) == sig
    assert base_key(model, "encoders.stem.1.norms.waymo.running_mean") == "encoders.stem.1.running_mean"
    assert base_key(model, "encoders.stem.1.norms.fleet.running_mean") is None
    assert torch.equal(model(x), source_out)  # fleet starts as a copy, waymo is the original
    assert set_domain(model, "fleet") == 4
    reestimate_batchnorm(model, _batches(4, 6, shift=3.0))
    fleet_out = model(x)
    assert not torch.allclose(fleet_out, source_out)
    set_domain(model, "waymo")
    assert torch.equal(model(x), source_out)  # the source statistics were not touched
    with pytest.raises(ConfigError, match="unknown domain"):
        set_domain(model, "kitti")


# --------------------------------------------------------------------------------------- freezing
def test_freezing_policies_and_counts() -> None:
    model = _net()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == (total, total, 1.0)
    head_n = sum(p.numel() for p in model.head.parameters())
    stage3_n = sum(p.numel() for p in model.encoders.stage3.parameters())
    stages = ["encoders.stem", "encoders.stage1", "encoders.stage2", "encoders.stage3"]

    c = apply_freezing(model, "adapters+head", head_prefixes=["head"])
    assert (c.trainable, c.total) == (head_n, total)
    model.train()
    assert frozen_norms_eval(model) == 4  # the encoders' BatchNorms keep their statistics
    assert not model.encoders.stem[1].training and model.head.training
    model.eval()
    c = apply_freezing(model, "last_k", head_prefixes=["head"], stage_names=stages, k=1)
    assert c.trainable == head_n + stage3_n
    assert c.share == pytest.approx((head_n + stage3_n) / total)
    c = apply_freezing(model, "full")
    assert c.trainable == total
    assert "parameters (100.00%)" in c.summary()
    assert c.as_dict()["params/trainable_share"] == 1.0
    assert "encoders" in parameter_table(model)

    insert_adapters(model, ["encoders.stage2"])
    c = apply_freezing(model, "last_k", head_prefixes=["head"], stage_names=stages, k=2)
    adapter_n = sum(p.numel() for p in model.encoders.stage2.adapter.parameters())
    stage2_n = sum(p.numel() for p in model.encoders.stage2.stage.parameters())
    assert c.trainable == head_n + stage3_n + stage2_n + adapter_n

    with pytest.raises(ConfigError, match="unknown freezing policy"):
        apply_freezing(model, "some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k=9"):
        apply_freezing(model, "last_k", stage_names=stages, k=9)
    with pytest.raises(ConfigError, match="decoder"):
        apply_freezing(model, "adapters+head", head_prefixes=["decoder"])


# ----------------------------------------------------------------------------------------- export
def _adapt(model: nn.Module) -> RigEmbedding:
    emb = RigEmbedding()
    apply_lora(model, ["encoders.stage*.0"], rank=4, alpha=8)
    insert_adapters(model, ["encoders.stage3"], reduction=4)
    insert_film(model, ["encoders.stage2"], cond_dim=emb.dim, hidden=8)
    convert_domain_norms(model, ["source", "target"], targets=["encoders.stage1.*"])
    set_domain(model, "target")
    apply_freezing(model, "adapters+head", head_prefixes=["head"])
    return emb


def _train_a_little(model: nn.Module, cond: torch.Tensor, sgd_step) -> None:
    reestimate_batchnorm(model, _batches(2, 9, shift=1.0), lambda m, x: _run(m, x, cond))
    lr = 1e-2
    model.train()
    for x in _batches(2, 11, b=2):
        _run(model, x, cond).pow(2).mean().backward()
        sgd_step(model, lr)
    model.eval()


def _run(model: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    with film_condition(cond):
        return model(x)


def test_export_import_round_trip(tmp_path, sgd_step) -> None:
    model = _net(width=32)
    emb = _adapt(model)
    cond = torch.randn(1, emb.dim)
    _train_a_little(model, cond, sgd_step)
    x = _batches(1, 13)[0]
    expected = _run(model, x, cond)

    path = tmp_path / "adapters.safetensors"
    header = save_adapters(model, path, {"method": "lora+bottleneck+film", "rank": 4, "alpha": 8})
    assert header["methods"] == ["bottleneck", "domain_norm", "film", "lora"]
    assert read_adapter_metadata(path)["metadata"]["rank"] == 4
    assert not list(tmp_path.glob("*.partial"))

    fresh = _net(width=32)  # the same pretrained weights
    loaded_header = load_adapters(fresh, path)
    assert loaded_header["recipe"] == header["recipe"]
    assert fresh.encoders.stage1[1].active == "target"
    torch.testing.assert_close(_run(fresh, x, cond), expected, atol=0, rtol=0)

    # The file holds the adapters (and head, which trains too) only: far smaller than the model.
    full_bytes = sum(t.numel() * t.element_size() for t in _net(width=32).state_dict().values())
    adapter_only = _net(width=32)
    _adapt(adapter_only)
    apply_freezing(adapter_only, "adapters+head", head_prefixes=[])
    small = tmp_path / "small.safetensors"
    save_adapters(adapter_only, small)
    assert path.stat().st_size < 0.5 * full_bytes
    assert small.stat().st_size < 0.25 * full_bytes


def test_load_adapters_refuses_other_base(tmp_path) -> None:
    model = _net()
    _adapt(model)
    path = tmp_path / "a.safetensors"
    save_adapters(model, path)
    with pytest.raises(CheckpointError, match="other pretrained weights"):
        load_adapters(_net(seed=7), path)
    with pytest.raises(CheckpointError, match="architecture with signature"):
        load_adapters(_net(width=8), path)
    load_adapters(_net(seed=7), path, check_base=False)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_adapters(_net(), bad)
    header = json.loads(json.dumps(read_adapter_metadata(path)))
    assert header["arch_signature"] == arch_signature(_net())
