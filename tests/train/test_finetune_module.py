"""FinetuneModule: building from a pretrained checkpoint, class-list changes, freezing, adapter export and
re-import (identical outputs), fine-tune checkpoints, the data module's labeled subset, selection helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from drivetl.calib import load_rig, rig_from_dict, rig_to_dict
from drivetl.data.collate import collate
from drivetl.data.datamodule import FinetuneDataModule
from drivetl.data.formats.team._example import write_example_team
from drivetl.data.synthetic import synthetic_sample
from drivetl.errors import CheckpointError, ConfigError
from drivetl.models import DetectorOutputs
from drivetl.models._keys import KeyRouted
from drivetl.models.adapters import build_adapted, load_finetuned, save_adapters
from drivetl.models.heads import BEVGeometry, BoxCoding
from drivetl.train._finetune_select import heatmap_entropy, pseudo_label_batch
from drivetl.train.finetune import FinetuneModule
from drivetl.train.pretrain import PretrainModule

# The tiny model gains nothing from intra-op threads (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
LIDAR = {
    "class_path": "drivetl.models.LidarEncoder",
    "init_args": {
        "voxel_size": [0.8, 0.8, 6.0],
        "point_range": [-12.8, -12.8, -1.0, 12.8, 12.8, 5.0],
        "pfn_channels": [8],
        "widths": [8, 16],
        "depths": [1, 1],
        "strides": [1, 2],
        "out_channels": 8,
        "out_stride": 2,
    },
}
CAMERA = {
    "class_path": "drivetl.models.CameraEncoder",
    "init_args": {
        "heights": [0.5, 1.5],
        "out_channels": 8,
        "backbone": {
            "class_path": "drivetl.models.ImageBackbone",
            "init_args": {"widths": [8, 8, 8], "depths": [1, 1, 1], "out_channels": 8, "out_stride": 8},
        },
    },
}
CLASSES = ["vehicle", "pedestrian", "cyclist", "sign"]


def detector_config(camera: bool) -> dict:
    args = {"classes": CLASSES, "head_channels": 8, "lidar": LIDAR}
    if camera:
        args.update(camera=CAMERA, fusion_channels=8)
    return {"class_path": "drivetl.models.BEVDetector", "init_args": args}


def save_pretrained(path: Path, camera: bool = False) -> Path:
    """A pretraining checkpoint written as Lightning would (state dict + hparams + on_save_checkpoint)."""
    torch.manual_seed(0)
    module = PretrainModule(detector_config(camera), objectives={"detection": 1.0})
    with torch.no_grad():  # make the head's class rows distinguishable
        for p in module.model.head.parameters():
            p.normal_()
    module._seen.update(
        columns=["x", "y", "z", "intensity"],
        rigs={"waymo_like"},
        camera_names=["FRONT", "SIDE_LEFT"] if camera else [],
        image_size=[48, 64],
    )
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def lidar_ckpt(tmp_path_factory) -> Path:
    return save_pretrained(tmp_path_factory.mktemp("pre") / "lidar.ckpt")


@pytest.fixture(scope="module")
def fusion_ckpt(tmp_path_factory) -> Path:
    return save_pretrained(tmp_path_factory.mktemp("pre") / "fusion.ckpt", camera=True)


@pytest.fixture(scope="module")
def fleet_rig():
    d = rig_to_dict(load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml"))
    d["lidars"][0]["columns"] = 200
    cam = d["cameras"][0]
    cam["width"], cam["height"] = cam["width"] // 20, cam["height"] // 20
    cam["intrinsics"] = {k: v / 20 for k, v in cam["intrinsics"].items()}
    return rig_from_dict(d, "small fleet_xt32")


def batch(camera: bool = False, seeds=(0, 1)):
    samples = [
        synthetic_sample(s, extent=11.0, num_boxes=4, ground_points=800, cameras=camera) for s in seeds
    ]
    return collate(
        samples,
        columns=("x", "y", "z", "intensity"),
        image_size=(48, 64) if camera else None,
        camera_names=None if camera else (),
    )


def perturb(module: FinetuneModule, seed: int = 1) -> None:
    """Stand-in for training: random trainable tensors and drifted BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for m in module.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.add_(0.05 * torch.randn(m.running_mean.shape, generator=g))


def outputs(model, b):
    model.eval()
    with torch.no_grad():
        out = model(b)
    return out.heatmap, out.regression


@pytest.mark.parametrize(
    ("method", "camera"),
    [("lora", False), ("bottleneck", False), ("film", False), ("domain_norm", False), ("lora", True)],
)
def test_adapter_round_trip(method: str, camera: bool, lidar_ckpt, fusion_ckpt, fleet_rig, tmp_path) -> None:
    ckpt = fusion_ckpt if camera else lidar_ckpt
    module = FinetuneModule(pretrained=str(ckpt), method=method, load_head=True)
    perturb(module)
    b = batch(camera)
    want = outputs(module, b)
    file = tmp_path / "adapters.safetensors"
    header = save_adapters(module.model, file, module.adapter_metadata())
    assert method in header["methods"]
    assert file.stat().st_size < 0.9 * sum(p.numel() * 4 for p in module.model.parameters())
    rebuilt = build_adapted(ckpt, file)
    got = outputs(rebuilt, b)
    assert all(torch.equal(w, g) for w, g in zip(want, got, strict=True))
    # the full fine-tune checkpoint rebuilds the same model without the pretrained file
    full = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(full)
    torch.save(full, tmp_path / "finetuned.ckpt")
    again = load_finetuned(tmp_path / "finetuned.ckpt")
    assert all(torch.equal(w, g) for w, g in zip(want, outputs(again, b), strict=True))


def test_adapters_refuse_other_pretrained_weights(lidar_ckpt, tmp_path) -> None:
    module = FinetuneModule(pretrained=str(lidar_ckpt), method="lora")
    file = tmp_path / "a.safetensors"
    save_adapters(module.model, file, module.adapter_metadata())
    data = torch.load(lidar_ckpt, weights_only=True)
    data["state_dict"]["model.lidar.backbone.stages.0.0.conv2.weight"] += 1.0
    torch.save(data, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="other pretrained weights"):
        build_adapted(tmp_path / "other.ckpt", file)


def test_class_list_change(lidar_ckpt) -> None:
    pre = torch.load(lidar_ckpt, weights_only=True)["state_dict"]
    module = FinetuneModule(
        pretrained=str(lidar_ckpt),
        classes=["car", "pedestrian", "bus"],
        class_map={"vehicle": "car"},
        load_head=True,
        method="none",
    )
    w = module.model.head.heatmap[1].weight
    old = pre["model.head.heatmap.1.weight"]
    assert w.shape[0] == 3 and module.model.classes == ("car", "pedestrian", "bus")
    assert torch.equal(w[0], old[0]) and torch.equal(w[1], old[1])  # car <- vehicle, pedestrian kept
    assert not torch.equal(w[2], old[2]) and not torch.equal(w[2], old[3])  # bus is new
    assert module.load_report.classes_new == ["bus"]
    assert module.load_report.classes_dropped == ["cyclist", "sign"]
    assert list(module.batch_spec.classes) == ["car", "pedestrian", "bus"]


def test_freezing_policies(lidar_ckpt) -> None:
    def trainable(m: FinetuneModule) -> set[str]:
        return {n for n, p in m.model.named_parameters() if p.requires_grad}

    head_only = trainable(FinetuneModule(pretrained=str(lidar_ckpt), method="norm", load_head=True))
    assert head_only and all(n.startswith("head.") for n in head_only)
    lora = trainable(FinetuneModule(pretrained=str(lidar_ckpt), method="lora", load_head=True))
    assert {n for n in lora if not n.startswith("head.")} and all(
        "lora_" in n for n in lora if not n.startswith("head.")
    )
    last = trainable(FinetuneModule(pretrained=str(lidar_ckpt), method="none", freeze="last_k", last_k=1))
    assert any(n.startswith("lidar.neck.") for n in last) and not any(n.startswith("lidar.pfn") for n in last)
    full = FinetuneModule(pretrained=str(lidar_ckpt), method="none", freeze="full")
    assert full.param_count.share == 1.0
    # without load_head the head is fresh and trains; unknown methods are refused
    with pytest.raises(ConfigError, match="unknown"):
        FinetuneModule(pretrained=str(lidar_ckpt), method="prompt")


def test_missing_detector_config(tmp_path) -> None:
    torch.save({"state_dict": {"model.x": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="plain.ckpt.*detector"):
        FinetuneModule(pretrained=str(tmp_path / "plain.ckpt"))


def test_labeled_subset_is_seeded(fleet_rig, tmp_path) -> None:
    root = write_example_team(tmp_path / "team", fleet_rig, frames=6, seed=0)

    def labeled(**kw):
        dm = FinetuneDataModule(root=str(root), **kw)
        dm.setup("fit")
        return dm

    a, b = labeled(labeled_fraction=0.4, seed=0), labeled(labeled_fraction=0.4, seed=0)
    assert a.labeled_keys == b.labeled_keys and len(set(a.labeled_keys)) == 2
    assert a.counts == {"labeled": 2, "unlabeled": 3, "val": 1, "norm": 5, "source": 0}
    others = {tuple(labeled(labeled_fraction=0.4, seed=s).labeled_keys) for s in range(1, 5)}
    assert len(others | {tuple(a.labeled_keys)}) > 1  # the seed changes the subset
    assert (Path(root) / "splits" / "val.txt").read_text().split()[0] not in {
        f"{k.segment}/{k.timestamp_us}" for k in a.labeled_keys
    }
    split = tmp_path / "labeled.txt"
    split.write_text(f"{a.labeled_keys[0].segment}/{a.labeled_keys[0].timestamp_us}\n")
    d = labeled(labeled_split_file=str(split))
    assert d.labeled_keys == a.labeled_keys[:1]
    # unlabeled frames never carry boxes into a batch; labeled ones do
    sample = d._sets["unlabeled"][0]
    assert len(sample.boxes) == 0 and len(d._sets["labeled"][0].boxes) > 0
    # source frames are re-sampled to the target's beams and added to the labeled set
    e = labeled(source_root=str(root), source_size_shift=True)
    assert e.counts["source"] == 6 and "target_beams" in e.source_options and "size_shift" in e.source_options


def test_pseudo_labels_and_entropy() -> None:
    geo = BEVGeometry(-12.8, -12.8, 1.6, 1.6, 16, 16)
    heat = torch.full((2, 4, 16, 16), -8.0)
    heat[0, 1, 5, 7] = 4.0  # one confident pedestrian in frame 0
    heat[1, 0, 9, 9] = -0.5  # one weak vehicle in frame 1
    reg = torch.zeros(2, 8, 16, 16)
    reg[:, 7] = 1.0  # cos(heading) = 1

    # the head's outputs only (plain sizes, sin/cos heading); the encoders' fields are not read
    Out = DetectorOutputs(heat, reg, geo, None, None, torch.ones(2, dtype=torch.bool), heat, None, None,
                          coding=BoxCoding())
    b = batch()
    pseudo = pseudo_label_batch(b, Out, threshold=0.5)
    assert pseudo.box_offsets.tolist() == [0, 1, 1]
    assert pseudo.box_classes.tolist() == [1]
    assert torch.allclose(pseudo.boxes[0, :2], torch.tensor([-12.8 + 7 * 1.6, -12.8 + 5 * 1.6]))
    ent = heatmap_entropy(heat, top_k=1)
    assert ent[0] < ent[1]


def test_summary_metadata_is_json(lidar_ckpt) -> None:
    module = FinetuneModule(pretrained=str(lidar_ckpt), method="film")
    meta = module.finetune_metadata()
    json.dumps(meta)
    assert (
        meta["adapters"]["recipe"]
        and meta["task"] == "finetune"
        and meta["arch"] == "drivetl.models.BEVDetector"
    )
    header_md = module.adapter_metadata()
    assert header_md["detector"]["init_args"]["occupancy_head"] is False


def test_empty_include_trains_from_scratch(lidar_ckpt, tmp_path) -> None:
    """include=[]: the checkpoint's architecture, fresh weights, everything trains (the scratch baseline)."""
    pre = torch.load(lidar_ckpt, weights_only=True)["state_dict"]
    module = FinetuneModule(pretrained=str(lidar_ckpt), include=[], method="none")
    assert module.load_report is None and module.param_count.share == 1.0
    w = module.model.lidar.backbone.stages[0][0].conv2.weight
    assert not torch.equal(w, pre["model.lidar.backbone.stages.0.0.conv2.weight"])
    perturb(module)
    b = batch()
    want = outputs(module, b)
    save_adapters(module.model, tmp_path / "a.safetensors", module.adapter_metadata())
    got = outputs(build_adapted(lidar_ckpt, tmp_path / "a.safetensors"), b)
    assert all(torch.equal(x, y) for x, y in zip(want, got, strict=True))
    with pytest.raises(ConfigError, match="names no module"):
        FinetuneModule(pretrained=str(lidar_ckpt), include=["camera"])


class _StageWithScale(KeyRouted, torch.nn.Module):
    """A new adapter method for the test below: a learned per-channel scale after a stage."""

    def __init__(self, stage: torch.nn.Module, channels: int):
        super().__init__()
        self.stage = stage
        self.scale = torch.nn.Parameter(torch.ones(channels))

    def route_key(self, rest):
        return ("skip", 1) if rest[0] == "stage" else ("drop", 0)

    def forward(self, *args):
        return self.stage(*args) * self.scale.view(1, -1, 1, 1)

    def recipe_entry(self) -> dict:
        return {"channels": int(self.scale.numel())}

    @staticmethod
    def from_recipe(target, entry, name):
        return _StageWithScale(target, entry["channels"])


def test_a_new_method_is_one_table_row(lidar_ckpt, tmp_path, monkeypatch) -> None:
    """A method defined outside drivetl and added as one row of METHODS trains, exports and reloads
    through the fine-tune module and both loaders, with nothing else changed."""
    from drivetl.models._keys import get_module, match_modules, set_module
    from drivetl.models.adapters import METHODS, Method, infer_out_channels

    def insert_scale(model, targets, spec):
        names = match_modules(model, targets)
        for name in names:
            stage = get_module(model, name)
            set_module(model, name, _StageWithScale(stage, infer_out_channels(stage, name)))
        return names

    row = Method(apply=insert_scale, lidar_targets=("lidar.neck",), modules=(_StageWithScale,))
    monkeypatch.setitem(METHODS, "scale", row)
    module = FinetuneModule(pretrained=str(lidar_ckpt), method="scale", load_head=True)
    assert any(n.endswith("scale") for n, p in module.model.named_parameters() if p.requires_grad)
    perturb(module)
    b = batch()
    want = outputs(module, b)
    header = save_adapters(module.model, tmp_path / "a.safetensors", module.adapter_metadata())
    assert header["methods"] == ["scale"] and header["recipe"] == [
        {"kind": "scale", "name": "lidar.neck", "channels": module.model.lidar.neck.scale.numel()}
    ]
    got = outputs(build_adapted(lidar_ckpt, tmp_path / "a.safetensors"), b)
    assert all(torch.equal(w, g) for w, g in zip(want, got, strict=True))
    full = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(full)
    torch.save(full, tmp_path / "finetuned.ckpt")
    again = outputs(load_finetuned(tmp_path / "finetuned.ckpt"), b)
    assert all(torch.equal(w, g) for w, g in zip(want, again, strict=True))


def test_weight_average_is_validated_saved_and_resumed(lidar_ckpt) -> None:
    """`ema_decay`: after each optimizer step avg <- avg + (1 - keep) (w - avg), keep = min(decay,
    (1 + n) / (10 + n)); validation runs on the average and the trainable tensors return after it;
    a checkpoint's weights are the average with the raw tensors beside them; loaded outside training
    it gives the average, resumed it gives training the raw tensors back and the average to go on
    with."""
    from drivetl.train.finetune import EMA_RAW_KEY

    module = FinetuneModule(pretrained=str(lidar_ckpt), method="lora", load_head=True, ema_decay=0.5)
    module.on_train_start()
    names = [n for n, p in module.model.named_parameters() if p.requires_grad]
    params = dict(module.model.named_parameters())
    start = {n: params[n].detach().clone() for n in names}
    opt = torch.optim.SGD([params[n] for n in names], lr=0.1)
    avg = dict(start)
    for n_update in (1, 2, 3):
        for n in names:
            params[n].grad = torch.full_like(params[n], float(n_update))
        module.optimizer_step(0, n_update, opt, optimizer_closure=lambda: None)
        keep = min(0.5, (1 + n_update) / (10 + n_update))
        avg = {n: avg[n] + (1 - keep) * (params[n].detach() - avg[n]) for n in names}
    raw = {n: params[n].detach().clone() for n in names}
    assert all(not torch.allclose(avg[n], raw[n]) for n in names)

    module.on_validation_epoch_start()
    assert all(torch.allclose(params[n], avg[n], atol=1e-6) for n in names)
    module.weight_average.swap(module.model)  # what on_validation_epoch_end does after logging the scores
    assert all(torch.equal(params[n], raw[n]) for n in names)

    ckpt = {"state_dict": module.state_dict(), "optimizer_states": []}
    module.on_save_checkpoint(ckpt)
    assert all(torch.allclose(ckpt["state_dict"][f"model.{n}"], avg[n], atol=1e-6) for n in names)
    assert all(torch.equal(ckpt[EMA_RAW_KEY]["tensors"][n], raw[n]) for n in names)
    assert ckpt[EMA_RAW_KEY]["updates"] == 3

    # loaded outside training (no trainer fitting it): the weights are the average
    loaded = FinetuneModule(pretrained=str(lidar_ckpt), method="lora", load_head=True, ema_decay=0.5)
    plain_ckpt = {k: (dict(v) if k == "state_dict" else v) for k, v in ckpt.items()}
    loaded.on_load_checkpoint(plain_ckpt)
    loaded.load_state_dict(plain_ckpt["state_dict"])
    now = dict(loaded.model.named_parameters())
    assert all(torch.allclose(now[n], avg[n], atol=1e-6) for n in names) and not loaded.weight_average.active

    # resumed by a trainer: training goes on from the raw tensors, averaging from the saved average
    again = FinetuneModule(pretrained=str(lidar_ckpt), method="lora", load_head=True, ema_decay=0.5)
    again._resuming = lambda: True
    again.on_load_checkpoint(ckpt)
    again.load_state_dict(ckpt["state_dict"])
    now = dict(again.model.named_parameters())
    assert all(torch.equal(now[n], raw[n]) for n in names)
    assert again.weight_average.updates == 3
    assert all(torch.allclose(again.weight_average.tensors[n], avg[n], atol=1e-6) for n in names)
    again.on_train_end()  # the average ends with training: later checkpoints (the export) hold the weights
    plain = {"state_dict": again.state_dict()}
    again.on_save_checkpoint(plain)
    assert EMA_RAW_KEY not in plain and torch.equal(plain["state_dict"][f"model.{names[0]}"], raw[names[0]])
    with pytest.raises(ConfigError, match="ema_decay"):
        FinetuneModule(pretrained=str(lidar_ckpt), method="lora", ema_decay=1.0)
