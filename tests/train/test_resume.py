"""Resuming: `--ckpt_path last` continues a run and refuses to start over silently; writers clean up
what a killed run left half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drivetl.calib import load_rig
from drivetl.cli import main
from drivetl.data.formats.team import TeamWriter
from drivetl.data.formats.team._example import write_example_team

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "team"
    write_example_team(root, load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml"), frames=4, seed=1)
    return root


def _pretrain(team: Path, run: Path, steps: int, *extra: str) -> int:
    return main([
        "pretrain", "--config", str(ROOT / "configs" / "pretrain" / "tiny_lidar.yaml"),
        "--data.root", str(team), "--trainer.max_steps", str(steps), "--trainer.val_check_interval", "2",
        "--trainer.default_root_dir", str(run),
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false", "--data.init_args.batch_size", "1", "--data.init_args.num_workers", "0",
        *(extra if "--trainer.limit_val_batches" in extra else ("--trainer.limit_val_batches", "1", *extra)),
    ])


def test_ckpt_path_last_without_a_checkpoint_is_refused(team: Path, tmp_path: Path, capsys) -> None:
    assert _pretrain(team, tmp_path / "run", 2, "--ckpt_path", "last") == 2
    err = capsys.readouterr().err
    assert "--ckpt_path last: no last.ckpt in" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_ckpt_path_last_continues_the_run(team: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _pretrain(team, run, 2) == 0
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 2
    assert _pretrain(team, run, 4, "--ckpt_path", "last") == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4
    changed = [k for k, v in first["state_dict"].items() if not torch.equal(v, resumed["state_dict"][k])]
    assert changed  # it trained on from the checkpoint


def test_team_writer_removes_a_killed_runs_partial_files(team: Path, tmp_path: Path) -> None:
    root = tmp_path / "team"
    rig = load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml")
    write_example_team(root, rig, frames=1, seed=1)
    stale = [root / "lidar" / ".1000000.pcd.abc123.partial", root / "frames" / ".x.json.k.partial"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    keep = root / "lidar" / "notes.partial"  # not a writer's temporary name
    keep.write_text("mine")
    with TeamWriter(root, rig) as writer:
        assert writer.stale_removed == 2
    assert not any(p.exists() for p in stale) and keep.exists()


def test_checkpoints_every_n_steps_without_validation(team: Path, tmp_path: Path) -> None:
    """A periodic checkpoint runs beside the validation-time one (so a run killed between
    validations loses at most N steps); 0 switches it off."""
    no_val = ("--trainer.limit_val_batches", "0")

    def periodic(run: Path) -> list[str]:
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["global_step"] == 3
        return [k for k in ckpt["callbacks"] if "'every_n_train_steps': 1," in k]

    assert _pretrain(team, tmp_path / "on", 3, "--checkpoint_every_n_steps", "1", *no_val) == 0
    assert len(periodic(tmp_path / "on")) == 1
    assert _pretrain(team, tmp_path / "off", 3, "--checkpoint_every_n_steps", "0", *no_val) == 0
    assert periodic(tmp_path / "off") == []


def _nan_box_frame(root: Path) -> Path:
    import json

    frame = sorted((root / "frames").rglob("*.json"))[0]  # a training frame (the last is held out)
    doc = json.loads(frame.read_text())
    doc["labels"]["objects"][0]["center"] = [float("nan"), 0.0, 0.0]
    frame.write_text(json.dumps(doc))
    return frame


def test_a_frame_that_turns_bad_stops_the_run_or_is_skipped(tmp_path: Path, capsys, caplog) -> None:
    root = tmp_path / "team"
    write_example_team(root, load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml"), frames=4, seed=1)
    bad = _nan_box_frame(root)
    # without --data.init_args.skip_corrupt: one line naming the frame file and the object
    assert _pretrain(root, tmp_path / "stop", 2) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and bad.name in err and "labels.objects[0]" in err, err
    assert not (tmp_path / "stop" / "checkpoints").exists()  # refused at start-up, before any step
    # with it: the frame is replaced by the next good one, reported by name, and the run finishes
    with caplog.at_level("WARNING", logger="drivetl.data.dataset"):
        assert _pretrain(root, tmp_path / "skip", 2, "--data.init_args.skip_corrupt", "true") == 0
    skipped = [r.getMessage() for r in caplog.records if "skipping a corrupt frame" in r.getMessage()]
    assert skipped and all(bad.name in m for m in skipped)
