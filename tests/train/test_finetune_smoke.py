"""Every config in configs/finetune/ runs 2 CPU steps through the real `drivetl finetune` command (after
the shared base.yaml, as the configs are meant to be composed), on a tiny pretrained checkpoint saved
the way `PretrainModule` saves one and a fleet folder in the team format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from drivetl.calib import load_rig, rig_from_dict, rig_to_dict
from drivetl.cli import main
from drivetl.data.formats.team._example import write_example_team
from drivetl.models.adapters import read_adapter_metadata

from .conftest import TINY_DETECTOR, save_pretrained

# The tiny model gains nothing from intra-op threads (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
STAT_KEY = r"model\.lidar\.backbone\.stages\.0\.(stage\.)?0\.bn2\.(norms\.target\.)?running_mean"
CONFIGS = sorted((ROOT / "configs" / "finetune").glob("*.yaml"))
BASE = ROOT / "configs" / "finetune" / "base.yaml"



def small_fleet_rig():
    """fleet_xt32 with 400 columns and a 192 x 108 camera: the same geometry, fewer points and pixels."""
    d = rig_to_dict(load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml"))
    d["lidars"][0]["columns"] = 400
    cam = d["cameras"][0]
    cam["width"], cam["height"] = cam["width"] // 10, cam["height"] // 10
    cam["intrinsics"] = {k: v / 10 for k, v in cam["intrinsics"].items()}
    return rig_from_dict(d, "small fleet_xt32")




@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fleet") / "team"
    write_example_team(root, small_fleet_rig(), frames=6, seed=3)
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    return save_pretrained(tmp_path_factory.mktemp("pre") / "pretrain.ckpt")


def _finetune(config: Path, ckpt: Path, fleet: Path, run: Path, *extra: str) -> int:
    return main(
        [
            "finetune",
            "--config",
            str(BASE),
            "--config",
            str(config),
            "--model.pretrained",
            str(ckpt),
            "--data.root",
            str(fleet),
            "--trainer.max_steps",
            "2",
            "--trainer.default_root_dir",
            str(run),
            "--trainer.num_sanity_val_steps",
            "0",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger",
            "false",
            "--data.num_workers",
            "0",
            "--data.batch_size",
            "2",
            "--model.norm_batches",
            "2",
            *extra,
        ]
    )


def test_configs_exist() -> None:
    names = {c.stem for c in CONFIGS}
    assert {"lora", "bottleneck", "film", "norm", "domain_norm", "full"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_smoke(config: Path, pretrained: Path, fleet: Path, tmp_path: Path) -> None:
    extra: tuple[str, ...] = ()
    if "self_training" in config.stem:  # pseudo-labels from the first epoch, and enough of them to train on
        extra = (
            "--model.self_training_start_epoch",
            "0",
            "--model.pseudo_threshold",
            "0.05",
            "--trainer.logger",
            "true",
            "--trainer.log_every_n_steps",
            "1",
        )
    assert _finetune(config, pretrained, fleet, tmp_path / "run", *extra) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "finetune_summary.json").read_text())
    assert (run / "finetuned.ckpt").is_file() and (run / "adapters.safetensors").is_file()
    assert summary["steps"] == 2
    header = read_adapter_metadata(run / "adapters.safetensors")
    assert header["metadata"]["method"] == summary["method"]
    if summary["freeze"] == "full":
        assert summary["trainable_share"] == 1.0
    else:
        assert 0.0 < summary["trainable_share"] < 1.0
    if summary["method"] in ("lora", "bottleneck", "film", "domain_norm"):
        assert summary["method"] in header["methods"]
    # the configs merged in order: the method file's own values over the base's
    stated = yaml.safe_load(config.read_text())["model"]["init_args"]
    assert summary["method"] == stated.get("method", "lora")
    used = yaml.safe_load(next(run.rglob("config.yaml")).read_text())["model"]["init_args"]
    assert used["warmup_steps"] == 20 and used["lr"] == stated.get("lr", 0.002)
    final = torch.load(run / "finetuned.ckpt", map_location="cpu", weights_only=True)
    meta = final["drivetl"]
    # frozen norms keep their statistics (under adapters the key gains a wrapper or domain level)
    key = next(k for k in final["state_dict"] if re.fullmatch(STAT_KEY, k))
    before = torch.load(pretrained, map_location="cpu", weights_only=True)["state_dict"]
    before = before["model.lidar.backbone.stages.0.0.bn2.running_mean"]
    frozen_stats = summary["freeze"] != "full" and summary["method"] not in ("norm", "domain_norm")
    assert torch.equal(final["state_dict"][key], before) == frozen_stats
    assert meta["task"] == "finetune" and meta["adapters"]["method"] == summary["method"]
    assert meta["norms_reestimated"] == (summary["method"] in ("norm", "domain_norm"))
    assert (run / "labeled_frames.txt").read_text().count("\n") == summary["frames"]["labeled"]
    if "self_training" in config.stem:
        assert summary["frames"]["unlabeled"] > 0
        logged = next((run / "csv").rglob("metrics.csv")).read_text().splitlines()[0].split(",")
        assert "train/self_training" in logged and "train/pseudo_boxes" in logged


def test_fusion_checkpoint(fleet: Path, tmp_path: Path) -> None:
    """A LiDAR + camera checkpoint: the fleet camera feeds the camera branch; LoRA reaches it by default."""
    fused = json.loads(json.dumps(TINY_DETECTOR))
    fused["init_args"]["fusion_channels"] = 8
    fused["init_args"]["camera"] = {
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
    ckpt = save_pretrained(tmp_path / "fusion.ckpt", fused, camera=True)
    assert _finetune(CONFIGS[0].parent / "lora.yaml", ckpt, fleet, tmp_path / "run") == 0
    header = read_adapter_metadata(tmp_path / "run" / "adapters.safetensors")
    names = {e["name"] for e in header["recipe"]}
    assert any(n.startswith("camera.") for n in names) and any(n.startswith("fusion.") for n in names)
    assert header["metadata"]["image_size"] == [48, 64]


def test_size_recalibration_through_the_command(fleet: Path, tmp_path: Path, capsys) -> None:
    """`--model.recalibrate_sizes true`: the start callback measures the size bias on the labeled
    frames, and the priors the adapter file and the checkpoint carry are the pretrained priors times
    the recorded factors."""
    import math

    from drivetl.models.heads._coding import CLASS_SIZES

    spec = json.loads(json.dumps(TINY_DETECTOR))
    spec["init_args"]["size_priors"] = True
    ckpt = save_pretrained(tmp_path / "priors.ckpt", spec)
    # random head tensors fire on many cells, so labels find detections to pair with
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    g = torch.Generator().manual_seed(0)
    for key, value in data["state_dict"].items():
        if key.startswith("model.head.") and value.is_floating_point() and "running_" not in key:
            value.copy_(torch.randn(value.shape, generator=g))
    torch.save(data, ckpt)
    run = tmp_path / "run"
    code = _finetune(
        CONFIGS[0].parent / "lora.yaml", ckpt, fleet, run, "--model.recalibrate_sizes", "true",
        "--model.score_threshold", "0.0",
    )
    assert code == 0
    assert "fine-tune: size priors recalibrated on" in capsys.readouterr().out
    meta = torch.load(run / "finetuned.ckpt", map_location="cpu", weights_only=True)["drivetl"]
    recal = meta["size_recalibration"]
    classes = spec["init_args"]["classes"]
    assert recal["classes"] == classes and sum(recal["pairs"]) > 0
    header = read_adapter_metadata(run / "adapters.safetensors")["metadata"]
    for detector in (meta["detector"], header["detector"]):
        priors = detector["init_args"]["size_priors"]
        for c, ratio in zip(classes, recal["log_ratio"], strict=True):
            want = [b * math.exp(r) for b, r in zip(CLASS_SIZES[c], ratio or (0, 0, 0), strict=True)]
            assert priors[c] == pytest.approx(want, rel=1e-5)


def test_wrong_architecture_exits_2(fleet: Path, tmp_path: Path, capsys) -> None:
    """A checkpoint of another model fails at once with one line naming the file."""
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    bad = tmp_path / "other.ckpt"
    torch.save(
        {"state_dict": other.state_dict(), "drivetl": {"arch": "mylab.PointNet", "classes": ["car"]}}, bad
    )
    assert _finetune(CONFIGS[0], bad, fleet, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "other.ckpt" in err and "mylab.PointNet" in err and err.startswith("drivetl finetune: error:")
    assert not (tmp_path / "run" / "adapters.safetensors").exists()


def test_mismatched_tensors_exit_2(fleet: Path, tmp_path: Path, capsys) -> None:
    """Metadata that promises one detector while the tensors are of another: load_pretrained's shape check."""
    wide = json.loads(json.dumps(TINY_DETECTOR))
    wide["init_args"]["lidar"]["init_args"]["widths"] = [16, 24]
    ckpt = save_pretrained(tmp_path / "wide.ckpt", wide)
    data = torch.load(ckpt, weights_only=True)
    data["drivetl"]["detector"] = TINY_DETECTOR
    torch.save(data, ckpt)
    assert _finetune(CONFIGS[0], ckpt, fleet, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "wide.ckpt" in err and "other shapes" in err


def test_method_config_alone_exits_2(tmp_path: Path, capsys) -> None:
    """A method's config states only what differs from base.yaml; alone it would run on the defaults."""
    assert main(["finetune", "--config", str(BASE.parent / "film.yaml"), "--data.root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "film.yaml" in err and "configs/finetune/base.yaml" in err


def test_missing_config_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["finetune", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_validation_scores_test_time_flips(
    fleet: Path, pretrained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`--model.val_tta double_flip`: the validation AP (the selection's metric) is scored on the
    averaged maps of the mirrored views, as `drivetl evaluate --tta` scores; an unknown mode exits 2."""
    import drivetl.train.finetune as ft

    modes: list[str] = []
    real = ft.tta_forward

    def spy(forward, batch, mode):
        modes.append(mode)
        return real(forward, batch, mode)

    monkeypatch.setattr(ft, "tta_forward", spy)
    run, lora = tmp_path / "run", CONFIGS[0].parent / "lora.yaml"
    assert _finetune(lora, pretrained, fleet, run, "--model.val_tta", "double_flip") == 0
    assert modes and set(modes) == {"double_flip"}
    assert (run / "adapters.safetensors").is_file()
    modes.clear()
    assert _finetune(lora, pretrained, fleet, tmp_path / "plain") == 0
    assert modes == []  # one pass by default
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # the option parser's own error
        _finetune(lora, pretrained, fleet, tmp_path / "x", "--model.val_tta", "rotate")
    assert exc.value.code == 2 and "val_tta" in capsys.readouterr().err
