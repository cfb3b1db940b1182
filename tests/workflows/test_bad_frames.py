"""Bad frames in `drivetl evaluate` and `drivetl predict`, through the real CLI: start-up checks fail
before any inference with one line; a frame that turns out unreadable mid-run stops the run with
one line naming it, or with --skip-corrupt is left out, counted and named; data-loading worker
processes (--workers 2) neither hang nor print a traceback."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from drivetl.cli import main

BAD = "seg0/1200000"  # the third frame of the tiny folder (a train-split frame)


@pytest.fixture
def guard():
    """Fail a test that runs past 120 s instead of waiting on a hung worker forever."""

    def alarm(signum, frame):
        raise TimeoutError("the command did not finish in 120 s (a data-loading worker hangs?)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _copy(tiny, tmp_path: Path) -> Path:
    data = tmp_path / "fleet"
    shutil.copytree(tiny["data"], data)
    return data


def _truncate_points(data: Path, frame: str = BAD) -> Path:
    pcd = data / "lidar" / "TOP" / f"{frame}.pcd"
    pcd.write_bytes(pcd.read_bytes()[:600])  # the header and a few points of ~2,000
    return pcd


def _evaluate(ckpt: Path, data: Path, out: Path, *extra: str) -> int:
    argv = ["evaluate", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out)]
    return main(argv + ["--render-frames", "1", "--score-threshold", "0.2", *extra])


def _predict(ckpt: Path, data: Path, out: Path, *extra: str) -> int:
    argv = ["predict", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out)]
    return main(argv + ["--render", "1", "--score-threshold", "0.2", *extra])


def _error_line(err: str, command: str) -> str:
    """The one error line of `err` (the progress bar shares stderr); no traceback anywhere."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"drivetl {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_workers_give_the_same_results_and_do_not_hang(tiny, tmp_path, guard) -> None:
    """The hang: with --workers N every batch was lost (a sample could not be pickled) and the
    command waited forever; now workers give exactly the in-process results."""
    from drivetl.workflows.evaluate import evaluate

    out = tmp_path / "eval"
    two = ("--workers", "2", "--batch-size", "3")
    assert _evaluate(tiny["lidar"], tiny["data"], out, *two, "--render-frames", "0") == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["data"]["frames"] == 4 and doc["data"]["skipped_corrupt"]["count"] == 0
    alone = evaluate(
        [str(tiny["lidar"])], tiny["data"], tmp_path / "alone",
        render_frames=0, figures=False, log=None, score_threshold=0.2, batch_size=3,
    )
    assert doc["models"][0]["result"] == alone.results["lidar"].to_dict()
    out = tmp_path / "pred"
    assert _predict(tiny["lidar"], tiny["data"], out, *two, "--render", "0") == 0
    assert len(list((out / "frames").rglob("*.json"))) == 4


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_bad_frame_mid_run_stops_with_one_line_naming_it(workers, tiny, tmp_path, capsys, guard) -> None:
    data = _copy(tiny, tmp_path)
    pcd = _truncate_points(data)
    assert _evaluate(tiny["lidar"], data, tmp_path / "o", "--workers", workers) == 2
    line = _error_line(capsys.readouterr().err, "evaluate")
    assert str(pcd) in line and "truncated" in line and f"frame {BAD.replace('/', '@')}" in line, line
    assert "--skip-corrupt" in line
    assert not (tmp_path / "o" / "metrics.json").exists()
    assert _predict(tiny["lidar"], data, tmp_path / "p", "--workers", workers) == 2
    line = _error_line(capsys.readouterr().err, "predict")
    assert str(pcd) in line and f"frame {BAD.replace('/', '@')}" in line, line
    # the frames before it were written; the bad one and the ones after it were not
    written = sorted(p.stem for p in (tmp_path / "p" / "frames").rglob("*.json"))
    assert "1200000" not in written and set(written) <= {"1000000", "1100000"}


def test_skip_corrupt_leaves_the_frame_out_of_every_model_and_names_it(tiny, tmp_path, capsys, guard) -> None:
    from drivetl.data.formats.team import TeamReader
    from drivetl.workflows.evaluate import EvalData, evaluate

    data = _copy(tiny, tmp_path)
    _truncate_points(data)
    out = tmp_path / "o"
    argv = ["--ckpt", str(tiny["fusion"]), "--workers", "2", "--skip-corrupt", "--render-frames", "0"]
    assert _evaluate(tiny["lidar"], data, out, *argv) == 0
    assert "1 frames skipped as unreadable" in capsys.readouterr().out
    doc = json.loads((out / "metrics.json").read_text())
    skipped = doc["data"]["skipped_corrupt"]
    assert skipped["count"] == 1 and doc["data"]["frames"] == 3
    first = skipped["frames"][0]
    assert first["frame"] == BAD.replace("/", "@") and "truncated" in first["reason"]
    for page in ("report.md", "report.html"):
        text = (out / page).read_text()
        assert "Skipped frames" in text and "1 of 4 frames skipped as unreadable" in text, page
    # exactly the numbers of evaluating the three good frames alone
    reader = TeamReader(tiny["data"])
    good = [k for k in reader.keys if str(k) != BAD.replace("/", "@")]
    three = EvalData(tiny["data"], TeamReader(tiny["data"], good), [0, 1, 2], reader.rig, "team")
    alone = evaluate(
        [str(tiny["lidar"]), str(tiny["fusion"])], three, tmp_path / "alone",
        render_frames=0, figures=False, log=None, score_threshold=0.2,
    )
    assert [m["result"] for m in doc["models"]] == [alone.results[n].to_dict() for n in ("lidar", "fusion")]


def test_predict_skip_corrupt_counts_the_frame_and_a_rerun_tries_it_again(tiny, tmp_path, capsys) -> None:
    data = _copy(tiny, tmp_path)
    pcd = _truncate_points(data)
    out = tmp_path / "p"
    assert _predict(tiny["lidar"], data, out, "--skip-corrupt") == 0
    assert "1 frames skipped as unreadable" in capsys.readouterr().out
    manifest = json.loads((out / "predict.json").read_text())
    assert manifest["predicted"] == 3 and manifest["skipped_corrupt"]["count"] == 1
    assert manifest["skipped_corrupt"]["frames"][0]["frame"] == BAD.replace("/", "@")
    assert "Skipped frames" in (out / "report.html").read_text()
    assert len(list((out / "frames").rglob("*.json"))) == 3
    shutil.copy(tiny["data"] / pcd.relative_to(data), pcd)  # repaired: the rerun predicts only it
    assert _predict(tiny["lidar"], data, out, "--skip-corrupt") == 0
    assert "1 frames predicted, 3 already there" in capsys.readouterr().out
    assert json.loads((out / "predict.json").read_text())["skipped_corrupt"]["count"] == 0


@pytest.mark.parametrize("flag", [[], ["--skip-corrupt"]])
def test_a_bad_first_frame_fails_at_start_up_before_any_inference(flag, tiny, tmp_path, capsys, monkeypatch):
    import drivetl.workflows.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "run_model", lambda *a, **k: pytest.fail("a model ran"))
    data = _copy(tiny, tmp_path)
    pcd = _truncate_points(data, "seg0/1000000")
    assert _evaluate(tiny["lidar"], data, tmp_path / "o", *flag) == 2
    line = _error_line(capsys.readouterr().err, "evaluate")
    assert str(pcd) in line and "the first frame" in line and "read at start-up" in line, line
    assert not (tmp_path / "o" / "metrics.json").exists()
    assert _predict(tiny["lidar"], data, tmp_path / "p", *flag) == 2
    assert "the first frame" in _error_line(capsys.readouterr().err, "predict")
    assert not (tmp_path / "p" / "predict.json").exists()


def test_a_camera_models_first_frame_decodes_its_images_at_start_up(tiny, tmp_path, capsys) -> None:
    data = _copy(tiny, tmp_path)
    jpeg = next((data / "camera").rglob("1000000.jpg"))
    jpeg.write_bytes(b"\xff\xd8\xff not a jpeg")
    assert _evaluate(tiny["fusion"], data, tmp_path / "o", "--render-frames", "0") == 2
    line = _error_line(capsys.readouterr().err, "evaluate")
    assert str(jpeg) in line and "the first frame" in line, line
    # the LiDAR-only model reads no image: its run is not stopped by one
    assert _evaluate(tiny["lidar"], data, tmp_path / "lidar", "--render-frames", "0") == 0


def test_bad_labels_fail_at_start_up_or_are_skipped(tiny, tmp_path, capsys, monkeypatch) -> None:
    import drivetl.workflows.evaluate as evaluate_module

    data = _copy(tiny, tmp_path)
    frame = data / "frames" / f"{BAD}.json"
    doc = json.loads(frame.read_text())
    doc["labels"]["objects"][0]["center"] = [1.0, "x", 0.0]
    frame.write_text(json.dumps(doc))
    run_model = evaluate_module.run_model
    monkeypatch.setattr(evaluate_module, "run_model", lambda *a, **k: pytest.fail("a model ran"))
    assert _evaluate(tiny["lidar"], data, tmp_path / "o") == 2
    line = _error_line(capsys.readouterr().err, "evaluate")
    assert f"{BAD}.json" in line and "labels.objects[0]" in line and "read at start-up" in line, line
    monkeypatch.setattr(evaluate_module, "run_model", run_model)
    # --split test leaves that (train) frame out, so its labels are not read
    assert _evaluate(tiny["lidar"], data, tmp_path / "split", "--split", "test", "--render-frames", "0") == 0
    assert _evaluate(tiny["lidar"], data, tmp_path / "s", "--skip-corrupt") == 0
    skipped = json.loads((tmp_path / "s" / "metrics.json").read_text())["data"]["skipped_corrupt"]
    assert skipped["count"] == 1 and "labels.objects[0]" in skipped["frames"][0]["reason"]


def test_a_worker_that_dies_is_one_line(tiny, tmp_path, capsys, monkeypatch, guard) -> None:
    """A worker killed mid-read (out of memory, a crash in a decoder): one line, not torch's error."""
    import os

    from drivetl.data.formats.team import TeamReader

    read = TeamReader.read

    def dies_on_the_bad_frame(self, key):
        if str(key) == BAD.replace("/", "@") and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return read(self, key)

    parent = os.getpid()
    monkeypatch.setattr(TeamReader, "read", dies_on_the_bad_frame)
    assert _evaluate(tiny["lidar"], tiny["data"], tmp_path / "o", "--workers", "2") == 2
    line = _error_line(capsys.readouterr().err, "evaluate")
    assert "a data-loading worker died" in line and "--workers 0" in line, line
