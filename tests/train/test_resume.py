"""Resuming: `--ckpt_path last` continues a run and refuses to start over silently, a resumed run
ends with the weights the uninterrupted run ends with; writers clean up what a killed run left
half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback

from drivetl.calib import load_rig
from drivetl.cli import main
from drivetl.data.formats.team import TeamWriter
from drivetl.data.formats.team._example import write_example_team
from drivetl.train._resume import AtomicCheckpointIO, random_state, set_random_state
from drivetl.train.cli import FinetuneCLI, PretrainCLI
from drivetl.train.finetune import EMA_RAW_KEY, TEACHER_KEY

from .conftest import save_pretrained

ROOT = Path(__file__).resolve().parents[2]

# The tiny model gains nothing from intra-op threads (see conftest.one_thread), and one thread keeps
# the float sums in the same order from run to run.
pytestmark = pytest.mark.usefixtures("one_thread")


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
    # what a run killed while saving leaves: temporary checkpoint files, removed when the next starts
    stale = [run / "checkpoints" / ".last.ckpt.k2j4x9.partial", run / ".finetuned.ckpt.partial"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = run / "checkpoints" / "notes.partial"  # not a temporary name of a writer
    keep.write_text("mine")
    assert _pretrain(team, run, 4, "--ckpt_path", "last") == 0
    assert not any(p.exists() for p in stale) and keep.exists()
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4
    changed = [k for k, v in first["state_dict"].items() if not torch.equal(v, resumed["state_dict"][k])]
    assert changed  # it trained on from the checkpoint


def test_resuming_with_another_order_says_so(team: Path, tmp_path: Path, caplog) -> None:
    """Another data seed (or other frames) cannot repeat the interrupted run: a warning names both."""
    run = tmp_path / "run"
    assert _pretrain(team, run, 2) == 0
    with caplog.at_level("WARNING", logger="drivetl.data.datamodule"):
        assert _pretrain(team, run, 3, "--ckpt_path", "last", "--data.init_args.seed", "5") == 0
    said = [r.getMessage() for r in caplog.records if "resuming with other data" in r.getMessage()]
    assert len(said) == 1 and "seed 0" in said[0] and "now seed 5" in said[0], said


def test_checkpoints_are_written_under_a_temporary_name(tmp_path: Path, monkeypatch) -> None:
    """A save that dies half-way through writing leaves the previous checkpoint as it was; its
    temporary file lies beside it, under the name the next run's start removes."""
    import drivetl.train._resume as resume

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    seen: list[list[str]] = []

    def dies_half_way(obj, f) -> None:
        f.write(before[: len(before) // 2])
        f.flush()
        seen.append(sorted(p.name for p in path.parent.iterdir()))
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(resume.torch, "save", dies_half_way)
    with pytest.raises(RuntimeError, match="killed while saving"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    partial = [n for n in seen[0] if n != "last.ckpt"]
    assert len(partial) == 1 and partial[0].startswith(".last.ckpt.") and partial[0].endswith(".partial")
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1


def test_random_state_round_trip_loads_with_weights_only(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.save(random_state(), tmp_path / "rng.pt")
    want = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    set_random_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]


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


# ---------------------------------------------------------------------- a resumed run repeats the run


class Killed(Exception):
    """Stands for the run being killed."""


class KillAfter(Callback):
    """Stops the run at the start of the step after `step` (its checkpoint at `step` is written), or
    with `in_validation` at the start of the validation that follows step `step` (the periodic
    checkpoint of that step is written, the one after validation is not)."""

    def __init__(self, step: int, in_validation: bool = False):
        self.step = step
        self.in_validation = in_validation

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise Killed(f"killed after step {self.step}")

    def on_validation_start(self, trainer, *args) -> None:
        if self.in_validation and not trainer.sanity_checking and trainer.global_step >= self.step:
            raise Killed(f"killed in the validation after step {self.step}")


def _kill_after(monkeypatch, cli: type, step: int, in_validation: bool = False) -> None:
    before = cli.extra_callbacks
    monkeypatch.setattr(cli, "extra_callbacks", lambda self: [*before(self), KillAfter(step, in_validation)])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"{len(differ)} tensors differ, the most by {max(differ.values()):.3g}"


@pytest.fixture(scope="module")
def team8(tmp_path_factory) -> Path:
    """8 frames: 7 training frames, 3 batches of 2 per epoch (the odd frame left out)."""
    root = tmp_path_factory.mktemp("resume8") / "team"
    write_example_team(root, load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml"), frames=8, seed=4)
    return root


@pytest.mark.parametrize(
    ("kill", "workers", "in_validation"),
    [(4, 0, False), (3, 0, False), (3, 0, True), (4, 2, False)],
    ids=["mid-epoch", "epoch-end", "in-validation", "mid-epoch-2-workers"],
)
def test_resumed_pretraining_ends_with_the_uninterrupted_runs_weights(
    team8: Path, tmp_path: Path, monkeypatch, kill: int, workers: int, in_validation: bool
) -> None:
    """7 steps over 3 epochs (masked occupancy draws from torch's generator, augmentation on,
    validation every 3 steps), killed after step `kill` and resumed: the same weights as without the
    kill, to the bit."""
    args = ("--data.init_args.batch_size", "2", "--data.init_args.num_workers", str(workers),
            "--checkpoint_every_n_steps", "1", "--trainer.val_check_interval", "3")
    assert _pretrain(team8, tmp_path / "whole", 7, *args) == 0
    with monkeypatch.context() as m:
        _kill_after(m, PretrainCLI, kill, in_validation)
        with pytest.raises(Killed):
            _pretrain(team8, tmp_path / "killed", 7, *args)
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == kill
    position = state["DriveDataModule"]  # the epoch, and the batches of it trained on
    assert (position["epoch"], position["batches"]) == ((kill - 1) // 3, (kill - 1) % 3 + 1)
    assert _pretrain(team8, tmp_path / "killed", 7, *args, "--ckpt_path", "last") == 0
    resumed = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 7
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "killed"))




@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny pretraining checkpoint, written as Lightning writes one (weights + drivetl metadata)."""
    return save_pretrained(
        tmp_path_factory.mktemp("pre") / "pretrain.ckpt", objectives={"detection": 1.0}, rig="fleet_xt32"
    )


def _finetune(pretrained: Path, fleet: Path, run: Path, steps: int, *extra: str) -> int:
    configs = ROOT / "configs" / "finetune"
    return main([
        "finetune", "--config", str(configs / "base.yaml"),
        "--config", str(configs / "lora_self_training.yaml"),
        "--model.pretrained", str(pretrained), "--data.root", str(fleet), "--trainer.max_steps", str(steps),
        "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false", "--data.num_workers", "0", "--data.batch_size", "2",
        "--data.labeled_fraction", "0.5", "--model.self_training_start_epoch", "0",
        "--model.pseudo_threshold", "0.05", "--model.lora_dropout", "0.2", "--model.selection", "label_free",
        "--checkpoint_every_n_steps", "1", *extra,
    ])


@pytest.mark.parametrize("kill", [3, 4], ids=["mid-epoch", "epoch-end"])
def test_resumed_self_training_ends_with_the_uninterrupted_runs_weights(
    team8: Path, pretrained: Path, tmp_path: Path, monkeypatch, kill: int
) -> None:
    """LoRA (dropout on) with self-training from epoch 0: labeled batches (2 per epoch) beside
    unlabeled ones (cycled), pseudo-labels from the epoch's teacher; killed mid-epoch, or after the
    last batch of an epoch (the resumed run starts the next epoch, whose teacher it must take anew:
    Lightning calls no ``on_train_epoch_start`` for it), and resumed."""
    assert _finetune(pretrained, team8, tmp_path / "whole", 5) == 0
    with monkeypatch.context() as m:
        _kill_after(m, FinetuneCLI, kill)
        with pytest.raises(Killed):
            _finetune(pretrained, team8, tmp_path / "killed", 5)
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == kill and TEACHER_KEY in state
    assert _finetune(pretrained, team8, tmp_path / "killed", 5, "--ckpt_path", "last") == 0
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "killed"))


@pytest.mark.parametrize("kill", [3, 4], ids=["mid-epoch", "epoch-end"])
def test_resumed_finetuning_with_a_weight_average_ends_with_the_uninterrupted_runs_weights(
    team8: Path, pretrained: Path, tmp_path: Path, monkeypatch, kill: int
) -> None:
    """`ema_decay` on (validation every 2 steps scores the average), killed after step 3 (mid-epoch)
    or 4 (an epoch's end) and resumed: the same average and the same raw tensors, to the bit."""
    args = ("--model.ema_decay", "0.9", "--trainer.val_check_interval", "2")
    assert _finetune(pretrained, team8, tmp_path / "whole", 5, *args) == 0
    with monkeypatch.context() as m:
        _kill_after(m, FinetuneCLI, kill)
        with pytest.raises(Killed):
            _finetune(pretrained, team8, tmp_path / "killed", 5, *args)
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == kill and state[EMA_RAW_KEY]["updates"] == kill
    assert _finetune(pretrained, team8, tmp_path / "killed", 5, *args, "--ckpt_path", "last") == 0
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)
    _assert_same_weights(whole["state_dict"], resumed["state_dict"])
    _assert_same_weights(whole[EMA_RAW_KEY]["tensors"], resumed[EMA_RAW_KEY]["tensors"])
    raw = whole[EMA_RAW_KEY]["tensors"]
    assert any(not torch.equal(whole["state_dict"][f"model.{n}"], v) for n, v in raw.items())
