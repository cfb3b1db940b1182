"""Every shipped pretraining config runs 2 steps on CPU through the real CLI on simulated Waymo data.

The data comes from the project's simulator (`drivetl simulate`, Waymo v1 TFRecords; one run reads the
same frames as a Waymo v2 folder) with a
reduced copy of the Waymo-like rig (the top LiDAR only, 16 beams, small camera images) so the
frames are quick to make and read. Overrides change only the data size (frames, batch, workers,
image size), never the model. The Waymo-scale configs are marked slow (their 468 x 468 BEV model takes
about a minute per CPU step); it runs with ``pytest -m slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from drivetl.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs" / "pretrain").glob("*.yaml"))
SLOW = {"waymo_fusion", "waymo_lidar"}


def _simulate(tmp_path_factory, fmt: str) -> Path:
    tmp = tmp_path_factory.mktemp("sim")
    rig = yaml.safe_load((ROOT / "configs" / "rigs" / "waymo_like.yaml").read_text())
    top = next(lidar for lidar in rig["lidars"] if lidar["name"] == "TOP")
    top.update(beams={"count": 16, "min_deg": -17.6, "max_deg": 2.4}, columns=500, returns=1)
    rig["lidars"] = [top]
    (tmp / "rig.yaml").write_text(yaml.safe_dump(rig))
    out = tmp / fmt
    rc = main(
        [
            "simulate",
            "--rig",
            str(tmp / "rig.yaml"),
            "--frames",
            "3",
            "--out",
            str(out),
            "--format",
            fmt,
            "--camera-scale",
            "0.05",
            "--frames-per-segment",
            "3",
            "--shard-frames",
            "3",
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def sim_waymo(tmp_path_factory) -> Path:
    """3 simulated frames in Waymo TFRecord format from a reduced Waymo-like rig."""
    return _simulate(tmp_path_factory, "waymo")


@pytest.mark.parametrize(
    "config",
    [pytest.param(c, marks=pytest.mark.slow) if c.stem in SLOW else c for c in CONFIGS],
    ids=[c.stem for c in CONFIGS],
)
def test_config_runs_two_steps(config: Path, sim_waymo: Path, tmp_path: Path) -> None:
    _two_steps(config, sim_waymo, tmp_path)


def test_pretraining_reads_waymo_v2(tmp_path_factory, tmp_path: Path) -> None:
    """The same run on the same frames written as a Waymo v2 folder (found by `--data.root` alone)."""
    data = _simulate(tmp_path_factory, "waymo-v2")
    _two_steps(ROOT / "configs" / "pretrain" / "tiny_lidar.yaml", data, tmp_path)


def _two_steps(config: Path, data: Path, tmp_path: Path, extra: list[str] | None = None) -> None:
    run = tmp_path / "run"
    argv = [
        "pretrain",
        "--config",
        str(config),
        "--data.root",
        str(data),
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.default_root_dir",
        str(run),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.batch_size",
        "1",
        "--data.init_args.num_workers",
        "0",
    ]
    argv += extra or []
    if yaml.safe_load(config.read_text())["data"]["init_args"].get("image_size"):
        argv += ["--data.init_args.image_size", "[32, 48]"]
    assert main(argv) == 0
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2
    meta = ckpt["drivetl"]
    assert meta["arch"] == "drivetl.models.BEVDetector" and meta["rigs"] == ["waymo"]
    assert meta["classes"] == ["vehicle", "pedestrian", "cyclist", "sign"]
    assert (run / "csv").is_dir() and (run / "tb").is_dir()


def test_training_threads_leave_a_core_per_loader_worker() -> None:
    from drivetl.train.cli import training_threads

    assert training_threads(2, cores=2) == 1
    assert training_threads(1, cores=2) == 1
    assert training_threads(0, cores=2) == 2
    assert training_threads(4, cores=16) == 12
    assert training_threads(0, cores=1) == 1


@pytest.mark.parametrize(("option", "expected"), [("auto", 2), ("1", 1)])
def test_cpu_threads_set_during_fit_and_put_back(
    option: str, expected: int, sim_waymo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--cpu_threads``: torch runs that many threads during fit (auto: the cores less the loader
    workers, here 3 cores and 1 worker); afterwards the caller's count is back."""
    import drivetl.train.cli as cli

    before = torch.get_num_threads()
    real, real_threads = torch.set_num_threads, cli.training_threads
    calls: list[int] = []
    monkeypatch.setattr(cli, "training_threads", lambda workers, cores=None: real_threads(workers, cores=3))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or real(n))
    real(3)
    try:
        _two_steps(
            ROOT / "configs" / "pretrain" / "tiny_lidar.yaml",
            sim_waymo,
            tmp_path,
            ["--cpu_threads", option, "--data.init_args.num_workers", "1"],
        )
        assert calls == [expected, 3]
        assert torch.get_num_threads() == 3
    finally:
        real(before)


def test_cpu_threads_refuses_zero(sim_waymo: Path, tmp_path: Path, capsys) -> None:
    before = torch.get_num_threads()
    argv = [
        "pretrain",
        "--config",
        str(ROOT / "configs" / "pretrain" / "tiny_lidar.yaml"),
        "--data.root",
        str(sim_waymo),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--cpu_threads",
        "0",
    ]
    assert main(argv) == 2
    assert "--cpu_threads must be a number >= 1 or auto, got 0" in capsys.readouterr().err
    assert torch.get_num_threads() == before
