"""Loading pretrained checkpoints: report, prefixes, class-list changes, wrong-architecture errors."""

from __future__ import annotations

from collections import OrderedDict
from fractions import Fraction

import pytest
import torch
from torch import nn

from drivetl.errors import CheckpointError
from drivetl.models.adapters import apply_lora, insert_adapters
from drivetl.models.checkpoint import checkpoint_metadata, load_pretrained, read_checkpoint

SOURCE_CLASSES = ["vehicle", "pedestrian", "cyclist"]


class Detector(nn.Module):
    """Encoders + a head with class-indexed outputs: heatmap (1 channel per class), box (2 per class)."""

    def __init__(self, classes: int = 3, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        w = width
        self.encoders = nn.Sequential(OrderedDict(
            stem=nn.Sequential(nn.Conv2d(4, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()),
            stage1=nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()),
        ))
        self.head = nn.ModuleDict({
            "shared": nn.Conv2d(w, w, 3, padding=1),
            "heatmap": nn.Conv2d(w, classes, 1),
            "box": nn.Conv2d(w, 2 * classes, 1),
        })


def _lightning_style(path, model: nn.Module, classes=SOURCE_CLASSES, arch="tests.Detector", **meta) -> None:
    """What a LightningModule with `self.model` saves: prefixed state dict + metadata + trainer state."""
    torch.save({
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.001}]}],
        "hyper_parameters": {"classes": list(classes), "lr": 0.001},
        "drivetl": checkpoint_metadata(model, arch=arch, classes=classes, grid={"voxel_size": [0.2, 0.2]},
                                       **meta),
    }, path)


def test_lightning_checkpoint_encoders_only(tmp_path) -> None:
    source = Detector(seed=1)
    path = tmp_path / "pretrain.ckpt"
    _lightning_style(path, source)
    model = Detector(seed=2)
    head_before = model.head["shared"].weight.clone()
    printed: list[str] = []
    report = load_pretrained(model, path, include=("encoders",), arch="tests.Detector",
                             classes=SOURCE_CLASSES, print_fn=printed.append)
    assert report.prefix == "model."
    assert len(report.loaded) == 2 * 2 + 2 * 5  # conv weight+bias, BN weight/bias/mean/var/count, x2
    assert not report.missing and not report.mismatched and not report.unexpected
    assert all(k.startswith("head.") for k in report.excluded)
    for k, v in source.encoders.state_dict().items():
        assert torch.equal(model.encoders.state_dict()[k], v), k
    assert torch.equal(model.head["shared"].weight, head_before)
    assert printed and "loaded" in printed[0] and str(path) in printed[0]
    assert report.metadata["grid"] == {"voxel_size": [0.2, 0.2]}
    # Another class list while only the encoders load: nothing to map, and the report says so.
    report = load_pretrained(Detector(seed=3), path, include=("encoders",), classes=["vehicle", "sign"],
                             print_fn=None)
    assert report.warnings and "no loaded tensor is class-indexed" in str(report)


def test_plain_state_dict_with_module_prefix_into_adapted_model(tmp_path) -> None:
    source = Detector(seed=1)
    path = tmp_path / "plain.pt"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    model = Detector(seed=2)
    apply_lora(model, ["encoders.*.0"], rank=2)
    insert_adapters(model, ["encoders.stage1"])
    report = load_pretrained(model, path, print_fn=None)
    assert report.prefix == "module." and not report.missing
    assert torch.equal(model.encoders.stage1.stage[0].weight, source.encoders.stage1[0].weight)
    assert torch.equal(model.head["box"].bias, source.head["box"].bias)
    assert read_checkpoint(path)[1] is None


def test_class_list_change_maps_by_name(tmp_path) -> None:
    source = Detector(seed=1)
    path = tmp_path / "pretrain.ckpt"
    _lightning_style(path, source, classes=["car", "pedestrian", "cyclist"])
    new_classes = ["pedestrian", "vehicle", "sign"]  # cyclist dropped, sign new, order changed
    model = Detector(classes=3, seed=2)
    fresh_sign = model.head["heatmap"].weight[2].clone()
    with pytest.raises(CheckpointError, match="class_dims"):  # same count: shapes cannot tell
        load_pretrained(model, path, classes=new_classes, class_map={"car": "vehicle"}, print_fn=None)
    report = load_pretrained(model, path, classes=new_classes, class_map={"car": "vehicle"},
                             class_dims={"head.heatmap.*": 0, "head.box.*": 0}, print_fn=None)
    assert sorted(report.class_mapped) == ["head.box.bias", "head.box.weight", "head.heatmap.bias",
                                          "head.heatmap.weight"]
    assert report.classes_new == ["sign"] and report.classes_dropped == ["cyclist"]
    src_h, h = source.head["heatmap"].weight, model.head["heatmap"].weight
    assert torch.equal(h[0], src_h[1]) and torch.equal(h[1], src_h[0])
    assert torch.equal(h[2], fresh_sign)  # a new class keeps its fresh initialization
    src_b, b = source.head["box"].weight, model.head["box"].weight
    assert torch.equal(b[0:2], src_b[2:4]) and torch.equal(b[2:4], src_b[0:2])


def test_class_count_change_detected_by_shape(tmp_path) -> None:
    source = Detector(seed=1)
    path = tmp_path / "pretrain.ckpt"
    _lightning_style(path, source)
    model = Detector(classes=4, seed=2)
    classes = ["cyclist", "vehicle", "sign", "pedestrian"]
    report = load_pretrained(model, path, classes=classes, print_fn=None)
    assert set(report.class_mapped) == {"head.heatmap.weight", "head.heatmap.bias", "head.box.weight",
                                        "head.box.bias"}
    assert not report.mismatched
    assert torch.equal(model.head["heatmap"].bias[[0, 1, 3]], source.head["heatmap"].bias[[2, 0, 1]])
    assert torch.equal(model.head["box"].bias[6:8], source.head["box"].bias[2:4])  # pedestrian block
    assert "class-mapped" in str(report)


def test_wrong_architecture_fails_at_once(tmp_path) -> None:
    path = tmp_path / "other.ckpt"
    _lightning_style(path, Detector(width=16), arch="tests.Detector")
    model = Detector(width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="other.ckpt.*other shapes"):
        load_pretrained(model, path, print_fn=None)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # nothing half-loaded
    with pytest.raises(CheckpointError, match="other.ckpt.*'tests.Detector'.*'tests.Other'"):
        load_pretrained(model, path, arch="tests.Other", print_fn=None)

    mlp = tmp_path / "mlp.pt"
    torch.save(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).state_dict(), mlp)
    with pytest.raises(CheckpointError, match="mlp.pt.*another architecture"):
        load_pretrained(model, mlp, print_fn=None)


def test_unsafe_or_missing_checkpoint(tmp_path) -> None:
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": Detector().state_dict(), "extra": Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match="pickled.ckpt.*weights-only"):
        load_pretrained(Detector(), path, print_fn=None)
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(Detector(), tmp_path / "absent.ckpt", print_fn=None)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        load_pretrained(Detector(), junk, print_fn=None)
    with pytest.raises(CheckpointError, match="include"):
        load_pretrained(Detector(), _save_plain(tmp_path), include=("backbone",), print_fn=None)


def _save_plain(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(Detector().state_dict(), path)
    return path
