"""`StepCheckpoints`: one run saves its weights at listed steps, loadable by `drivetl evaluate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from drivetl.calib import load_rig
from drivetl.cli import main
from drivetl.data.formats.team._example import write_example_team
from drivetl.errors import ConfigError
from drivetl.train.cli import StepCheckpoints, step_checkpoint
from drivetl.workflows.evaluate import ModelSpec, load_model

ROOT = Path(__file__).resolve().parents[2]


def test_steps_are_checked() -> None:
    for bad in ([], [-1], [2.5]):
        with pytest.raises(ConfigError, match="StepCheckpoints"):
            StepCheckpoints(bad, "x")
    assert step_checkpoint("run/steps", 50) == Path("run/steps/step_000050.ckpt")


def test_a_pretraining_run_saves_the_listed_steps(tmp_path: Path) -> None:
    team = tmp_path / "team"
    write_example_team(team, load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml"), frames=4, seed=1)
    run, steps = tmp_path / "run", tmp_path / "run" / "steps"
    extra = tmp_path / "steps.yaml"
    callback = {"class_path": "drivetl.train.cli.StepCheckpoints", "init_args": {"steps": [0, 2, 3, 50]}}
    callback["init_args"]["dirpath"] = str(steps)
    extra.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    code = main([
        "pretrain", "--config", str(ROOT / "configs" / "pretrain" / "tiny_lidar.yaml"),
        "--config", str(extra),
        "--data.root", str(team), "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
        "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(run),
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false", "--data.init_args.batch_size", "1", "--data.init_args.num_workers", "0",
    ])  # fmt: skip
    assert code == 0
    # the steps the run reached, nothing half-written, nothing for step 50
    assert sorted(p.name for p in steps.iterdir()) == [step_checkpoint(steps, s).name for s in (0, 2, 3)]
    states = {
        s: torch.load(step_checkpoint(steps, s), map_location="cpu", weights_only=True) for s in (0, 2, 3)
    }
    assert all("drivetl" in c and "optimizer_states" not in c for c in states.values())
    assert [c["global_step"] for c in states.values()] == [0, 2, 3]
    weights = {s: c["state_dict"] for s, c in states.items()}
    name = next(k for k, v in weights[0].items() if v.is_floating_point() and k.endswith("weight"))
    # each file holds the weights of its own step: they moved between the saves
    assert not torch.equal(weights[0][name], weights[2][name])
    assert not torch.equal(weights[2][name], weights[3][name])
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(last[name], weights[3][name])
    loaded = load_model(ModelSpec(step_checkpoint(steps, 2), "step 2"))
    assert loaded.model is not None and not loaded.has_camera
