"""Kill and resume: each resumable command runs in a process that is killed (SIGKILL: no clean-up of
any kind) part-way, then the same command runs again to completion. What it leaves must be exactly
what an uninterrupted run leaves in another folder (byte for byte; for training, the final weights),
with no temporary file left behind.

`drivetl convert` (Waymo v1 -> training cache), `drivetl simulate` (waymo, waymo-v2, team),
`drivetl import bag` (a ROS 1 bag and an MCAP file, written from simulated frames by the project's
own log writer) and `drivetl pretrain` (``--ckpt_path last``).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from drivetl.calib import load_rig, save_rig

ROOT = Path(__file__).resolve().parents[1]
RIGS = ROOT / "configs" / "rigs"

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------- running and killing


def _command(args: Sequence[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "drivetl", *map(str, args)], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _run(args: Sequence[str], log: Path, timeout: float = 600) -> None:
    proc = _command(args, log)
    code = proc.wait(timeout)
    assert code == 0, f"drivetl {' '.join(map(str, args))} exited with {code}:\n{log.read_text()[-3000:]}"


def _run_killed(args: Sequence[str], log: Path, ready: Callable[[], bool], timeout: float = 600) -> None:
    """Start the command, SIGKILL it as soon as `ready()` holds; fail when it ended before that."""
    proc = _command(args, log)
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"drivetl {args[0]} ended (exit {proc.returncode}) before it could be killed "
                        f"part-way:\n{log.read_text()[-3000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"drivetl {args[0]}: not ready to be killed after {timeout} s")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _partials(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".partial")]


def _assert_same_files(resumed: Path, whole: Path) -> None:
    a, b = _files(resumed), _files(whole)
    assert not _partials(resumed)
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"{len(differ)} files differ from the uninterrupted run's, e.g. {differ[:3]}"


def _count(root: Path, pattern: str) -> int:
    return sum(1 for p in root.rglob(pattern) if not p.name.startswith("."))


# ---------------------------------------------------------------------- simulate


def _small_rig_file(path: Path, name: str, columns: int) -> Path:
    """A shipped rig with fewer LiDAR columns and one small camera (fast to simulate)."""
    rig = load_rig(RIGS / f"{name}.yaml")
    lidars = tuple(dataclasses.replace(lid, columns=min(columns, lid.columns)) for lid in rig.lidars)
    cam = rig.cameras[0]
    cam = cam.scaled(160 / cam.width, round(160 * cam.height / cam.width) / cam.height)
    save_rig(dataclasses.replace(rig, lidars=lidars, cameras=(cam,)), path)
    return path


def _simulate_args(rig: Path, out: Path, fmt: str) -> list[str]:
    return ["simulate", "--rig", rig, "--frames", 4, "--out", out, "--format", fmt, "--seed", 3,
            "--frames-per-segment", 2, "--shard-frames", 1]


@pytest.mark.parametrize(
    ("fmt", "rig", "done"),
    [
        # a shard TFRecord per frame: killed once the first exists
        ("waymo", "waymo_like", lambda out: _count(out, "*.tfrecord") >= 1),
        # a segment's 7 Parquet files are finished together: killed once the first of the two
        # segments is complete, while the second's are open under temporary names
        ("waymo-v2", "waymo_like", lambda out: _count(out, "*.parquet") >= 7 and bool(_partials(out))),
        # frame by frame: killed once the first frame file exists
        ("team", "fleet_xt32", lambda out: _count(out, "*.json") >= 1),
    ],
    ids=["waymo", "waymo-v2", "team"],
)
def test_simulate(tmp_path: Path, fmt: str, rig: str, done: Callable[[Path], bool]) -> None:
    rig_file = _small_rig_file(tmp_path / "rig.yaml", rig, columns=600)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _run(_simulate_args(rig_file, whole, fmt), tmp_path / "whole.log")
    args = _simulate_args(rig_file, resumed, fmt)
    _run_killed(args, tmp_path / "resumed.log", lambda: done(resumed))
    complete = {name for name in _files(resumed) if not name.endswith(".partial")}
    assert complete < set(_files(whole))  # killed part-way
    if fmt == "waymo-v2":
        assert _partials(resumed)  # what the killed writer had open; the rerun removes it
    _run(args, tmp_path / "resumed.log")
    _assert_same_files(resumed, whole)
    summary = (tmp_path / "resumed.log").read_text().rsplit("frames simulated: ", 1)[1]
    assert "already present (skipped): 0\n" not in summary  # the rerun resumed: it skipped some


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _assert_gone(pids: list[int], seconds: float = 10) -> None:
    end = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    alive = [p for p in pids if _alive(p)]
    for p in alive:  # do not leave them running after the test
        os.kill(p, signal.SIGKILL)
    assert not alive, f"worker processes {alive} outlived the killed run"


def _run_killed_with_workers(args: Sequence[str], log: Path, out: Path, ready: Callable[[], bool]) -> None:
    """`_run_killed` for a run with worker processes: they must die with it, and nothing complete
    may appear in `out` after the kill (orphans would go on writing while a rerun writes there too)."""
    proc = _command(args, log)
    workers: set[int] = set()
    while not ready():
        assert proc.poll() is None, f"ended before it could be killed part-way:\n{log.read_text()[-3000:]}"
        workers |= set(_children(proc.pid))
        time.sleep(0.005)
    workers |= set(_children(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    at_kill = {name for name in _files(out) if not name.endswith(".partial")}
    assert len(workers) >= 2  # the pool's workers (and multiprocessing's resource tracker)
    _assert_gone(sorted(workers), seconds=2)
    time.sleep(1)
    assert {name for name in _files(out) if not name.endswith(".partial")} == at_kill


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="reads process children from /proc"
)


@needs_proc
def test_simulate_workers_die_with_the_run(tmp_path: Path) -> None:
    """Killed, a run with worker processes takes them along; the rerun completes the folder as one
    uninterrupted run would."""
    rig_file = _small_rig_file(tmp_path / "rig.yaml", "waymo_like", columns=600)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _run([*_simulate_args(rig_file, whole, "waymo"), "--frames", 8], tmp_path / "whole.log")
    args = [*_simulate_args(rig_file, resumed, "waymo"), "--frames", 8, "--workers", 2]
    _run_killed_with_workers(
        args, tmp_path / "resumed.log", resumed, lambda: _count(resumed, "*.tfrecord") >= 1
    )
    _run(args, tmp_path / "resumed.log")
    _assert_same_files(resumed, whole)


# ---------------------------------------------------------------------- convert


@pytest.fixture(scope="module")
def waymo_files(tmp_path_factory) -> Path:
    """Four Waymo v1 files of three full-size synthetic frames each."""
    from drivetl.data.formats.waymo import WaymoWriter
    from drivetl.data.formats.waymo._synthetic import synthetic_frame
    from drivetl.data.records import FrameKey

    root = tmp_path_factory.mktemp("waymo_src")
    for f in range(4):
        with WaymoWriter(root / f"seg{f}.tfrecord") as w:
            for i in range(3):
                record, range_images = synthetic_frame(10 * f + i, top_shape=(64, 1000), side_shape=(16, 200))
                w.write(dataclasses.replace(record, key=FrameKey(f"seg{f}", 1_000_000 * i)), range_images)
    return root


def test_convert(waymo_files: Path, tmp_path: Path) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _run(["convert", "waymo", waymo_files, whole], tmp_path / "whole.log")
    args = ["convert", "waymo", waymo_files, resumed]
    # killed once the first shard is finished (its .json), while the next one is being written
    _run_killed(args, tmp_path / "resumed.log",
                lambda: _count(resumed / "shards", "*.json") >= 1 and bool(_partials(resumed)))
    assert not (resumed / "index.json").exists() and _partials(resumed)
    _run(args, tmp_path / "resumed.log")
    _assert_same_files(resumed, whole)
    assert "already done" in (tmp_path / "resumed.log").read_text()


@needs_proc
def test_convert_workers_die_with_the_run(waymo_files: Path, tmp_path: Path) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _run(["convert", "waymo", waymo_files, whole], tmp_path / "whole.log")
    args = ["convert", "waymo", waymo_files, resumed, "--workers", 2]
    _run_killed_with_workers(args, tmp_path / "resumed.log", resumed,
                             lambda: bool(_partials(resumed)))
    _run(args, tmp_path / "resumed.log")
    _assert_same_files(resumed, whole)


# ---------------------------------------------------------------------- import


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    """Six simulated fleet_xt32 frames written as a ROS 1 bag and as an MCAP file."""
    from drivetl.data.formats.bag import write_log
    from drivetl.data.formats.team import TeamReader
    from drivetl.sim.dataset import SimulationPlan, simulate_dataset
    from drivetl.sim.lidar import LidarNoise

    root = tmp_path_factory.mktemp("logs")
    rig = load_rig(_small_rig_file(root / "rig.yaml", "fleet_xt32", columns=1000))
    plan = SimulationPlan(rig, 6, root / "sim", format="team", frames_per_segment=6, shard_frames=6,
                          noise=LidarNoise(motion=False))
    simulate_dataset(plan)
    sim = TeamReader(root / "sim")
    out = {}
    for container, name in (("ros1", "drive.bag"), ("mcap-cdr", "drive.mcap")):
        info = write_log(root / name, sim.rig, list(sim), container=container, layout="hesai")
        out[container] = (root / name, info)
    return out


@pytest.mark.parametrize("container", ["ros1", "mcap-cdr"])
def test_import_bag(logs: dict, tmp_path: Path, container: str) -> None:
    log, info = logs[container]
    topics = ["--lidar-topic", f"{info['lidar_topics']['TOP']}=TOP"]
    for name, topic in info["camera_topics"].items():
        topics += ["--camera-topic", f"{topic}={name}"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _run(["import", "bag", log, whole, *topics], tmp_path / "whole.log")
    args = ["import", "bag", log, resumed, *topics]
    _run_killed(args, tmp_path / "resumed.log",
                lambda: (resumed / "frames").is_dir() and _count(resumed / "frames", "*.json") >= 1)
    _run(args, tmp_path / "resumed.log")
    _assert_same_files(resumed, whole)


# ---------------------------------------------------------------------- pretrain


def test_pretrain(tmp_path: Path) -> None:
    """Killed once its first periodic checkpoint exists (with a loader worker), resumed with
    ``--ckpt_path last``: the final weights of the uninterrupted run, and no temporary file."""
    from drivetl.data.formats.team._example import write_example_team

    team = tmp_path / "team"
    write_example_team(team, load_rig(RIGS / "fleet_xt32.yaml"), frames=8, seed=4)

    def args(run: Path) -> list[str]:
        return ["pretrain", "--config", ROOT / "configs" / "pretrain" / "tiny_lidar.yaml",
                "--data.root", team,
                "--trainer.max_steps", 8, "--trainer.val_check_interval", 3, "--trainer.limit_val_batches", 1,
                "--trainer.default_root_dir", run, "--trainer.accelerator", "cpu",
                "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
                "--data.init_args.batch_size", 2, "--data.init_args.num_workers", 1,
                "--checkpoint_every_n_steps", 2]

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _run(args(whole), tmp_path / "whole.log")
    last = resumed / "checkpoints" / "last.ckpt"
    _run_killed(args(resumed), tmp_path / "resumed.log", last.is_file)
    _run([*args(resumed), "--ckpt_path", "last"], tmp_path / "resumed.log")
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run's, e.g. {differ[:3]}"
    assert not _partials(resumed)
