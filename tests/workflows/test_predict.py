"""`drivetl predict` through the real CLI: label-schema files, scored like the checkpoint, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drivetl.cli import main
from drivetl.data.formats.team import TeamFormat
from drivetl.data.formats.team._layout import boxes_from_json
from drivetl.errors import ConfigError
from drivetl.workflows.predict import predict

THRESHOLD = "0.2"


def _predict(ckpt: Path, data: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "predict",
            "--ckpt",
            str(ckpt),
            "--data",
            str(data),
            "--out",
            str(out),
            "--score-threshold",
            THRESHOLD,
        ]
        + list(extra)
    )


def _half_right_labels(tiny, tmp_path, fleet_files) -> Path:
    """A copy of the folder whose labels are the model's own boxes, every other one moved 1 m: an AP
    strictly between 0 and 1, so equal scores mean something."""
    from drivetl.data.records import Boxes
    from drivetl.workflows.evaluate import ModelSpec, load_model, open_eval_data, run_model

    run = run_model(
        load_model(ModelSpec.parse(str(tiny["lidar"]))), open_eval_data(tiny["data"]), score_threshold=0.3
    )
    labels = {}
    for i, f in enumerate(run.frames):
        boxes = f.detections.boxes.copy()
        boxes[::2, 0] += 1.0
        labels[i] = Boxes(boxes, f.detections.classes)
    return fleet_files.write_folder(tmp_path / "labelled", labels=labels)


def test_predict_files_score_like_the_checkpoint(tiny, tmp_path, capsys, fleet_files) -> None:
    data = _half_right_labels(tiny, tmp_path, fleet_files)
    out = tmp_path / "pred"
    assert _predict(tiny["lidar"], data, out, "--split", "test", "--render", "1") == 0
    printed = capsys.readouterr().out
    assert "2 frames predicted, 0 already there" in printed and "frames/s" in printed
    files = sorted((out / "frames").rglob("*.json"))
    assert [f.relative_to(out / "frames").as_posix() for f in files] == [
        "seg0/1100000.json",
        "seg0/1300000.json",
    ]
    doc = json.loads(files[0].read_text())
    assert doc["labels"]["frame"] == "vehicle" and doc["labels"]["objects"]
    # the files are team labels: the team reader's own parser takes them (pseudo-labels)
    boxes, _ = boxes_from_json(doc["labels"]["objects"], TeamFormat(), np.eye(4), str(files[0]))
    assert len(boxes) == len(doc["labels"]["objects"])
    assert all(o["score"] >= float(THRESHOLD) for o in doc["labels"]["objects"])
    manifest = json.loads((out / "predict.json").read_text())
    assert manifest["complete"] and manifest["predicted"] == 2 and len(manifest["model"]["sha256"]) == 64
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "frames/s" in html
    assert list((out / "renders" / "bev").glob("*.png")) and list((out / "renders" / "camera").glob("*.png"))

    # evaluate scores the files exactly as it scores the checkpoint on the same frames
    rep = tmp_path / "report"
    argv = ["evaluate", "--ckpt", str(tiny["lidar"]), "--predictions", str(out), "--data", str(data)]
    argv += ["--split", "test", "--out", str(rep), "--render-frames", "1", "--score-threshold", THRESHOLD]
    assert main(argv) == 0
    models = json.loads((rep / "metrics.json").read_text())["models"]
    assert [m["kind"] for m in models] == ["pretrain", "predictions"]
    direct, files_result = (m["result"] for m in models)
    assert direct["summary"] == files_result["summary"]
    assert direct["entries"] == files_result["entries"]
    assert 0.0 < direct["summary"]["LEVEL_2"]["all"]["map"] < 1.0
    page = (rep / "report.html").read_text()
    assert "<table>" in page and "Box errors" in page and page.count("data:image/png;base64,") >= 4


def test_predict_resumes_and_refuses_to_mix_models(tiny, tmp_path, capsys) -> None:
    out = tmp_path / "pred"
    assert _predict(tiny["lidar"], tiny["data"], out, "--render", "0") == 0
    files = sorted((out / "frames").rglob("*.json"))
    assert len(files) == 4
    before = files[2].read_text()
    files[2].unlink()
    (files[2].parent / f".{files[2].name}.x.partial").write_text("{")  # an interrupted write's leftover
    capsys.readouterr()
    assert _predict(tiny["lidar"], tiny["data"], out, "--render", "0") == 0
    assert "1 frames predicted, 3 already there" in capsys.readouterr().out
    # the same boxes (a batch of one frame instead of four rounds the convolutions differently)
    again, first = (json.loads(t)["labels"]["objects"] for t in (files[2].read_text(), before))
    assert [o["class"] for o in again] == [o["class"] for o in first]
    rows = [[[*o["center"], *o["size"], o["heading"], o["score"]] for o in objs] for objs in (again, first)]
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-4)
    before = files[2].read_text()
    # another model into the same folder: one clear line, nothing rewritten
    assert _predict(tiny["fusion"], tiny["data"], out, "--render", "0") == 2
    err = capsys.readouterr().err
    assert "drivetl predict: error:" in err and "predictions of another model" in err and err.count("\n") == 1
    assert files[2].read_text() == before


@pytest.mark.parametrize("case", ["no_model", "bad_onnx", "no_data"])
def test_predict_bad_input_exit_2(case, tiny, tmp_path, capsys) -> None:
    if case == "no_model":
        argv = ["predict", "--ckpt", str(tmp_path / "nope.ckpt"), "--data", str(tiny["data"])]
        expect = "nope.ckpt: checkpoint not found"
    elif case == "bad_onnx":
        (tmp_path / "m.onnx").write_bytes(b"not a model")
        argv = ["predict", "--onnx", str(tmp_path / "m.onnx"), "--data", str(tiny["data"])]
        expect = "m.onnx: not an ONNX model"
    else:
        argv = ["predict", "--ckpt", str(tiny["lidar"]), "--data", str(tmp_path / "missing")]
        expect = "data folder not found"
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "drivetl predict: error:" in err and expect in err
    assert not (tmp_path / "o" / "frames").exists()


def test_resume_on_waymo_tfrecords_reads_keys_without_decoding_frames(tiny, tmp_path, monkeypatch) -> None:
    """A resumed run over Waymo TFRecords learns which frames are done from each record's head:
    only the frame it predicts (and the first, read at start-up) is decoded."""
    from drivetl.data.formats.waymo import WaymoRecordIndex, WaymoWriter
    from drivetl.data.formats.waymo._synthetic import synthetic_frame

    data = tmp_path / "waymo"
    data.mkdir()
    with WaymoWriter(data / "a.tfrecord") as w:
        for i in range(4):
            w.write(*synthetic_frame(i, top_shape=(16, 200), side_shape=(8, 40), timestamp_us=2_000_000 + i))
    kw = {"render": 0, "batch_size": 2, "log": None, "html": False}
    first = predict(str(tiny["lidar"]), data, tmp_path / "pred", max_frames=3, **kw)
    assert first.predicted == 3
    decoded = []
    getitem = WaymoRecordIndex.__getitem__
    monkeypatch.setattr(WaymoRecordIndex, "__getitem__", lambda s, i: decoded.append(i) or getitem(s, i))
    second = predict(str(tiny["lidar"]), data, tmp_path / "pred", **kw)
    assert (second.skipped, second.predicted) == (3, 1)
    # record 0 is read at start-up (the index checks it is a Frame; the rig comes from it), 3 is predicted
    assert set(decoded) == {0, 3}, decoded
    files = sorted((tmp_path / "pred" / "frames").rglob("*.json"))
    assert [f.stem for f in files] == [str(2_000_000 + i) for i in range(4)]


def test_predict_with_test_time_flips_scores_like_evaluate_with_them(tiny, tmp_path, capsys) -> None:
    out = tmp_path / "pred"
    assert _predict(tiny["lidar"], tiny["data"], out, "--render", "0", "--tta", "double_flip") == 0
    assert json.loads((out / "predict.json").read_text())["tta"] == "double_flip"
    rep = tmp_path / "report"
    argv = ["evaluate", "--ckpt", str(tiny["lidar"]), "--predictions", str(out), "--data", str(tiny["data"])]
    argv += ["--out", str(rep), "--render-frames", "0", "--score-threshold", THRESHOLD]
    argv += ["--tta", "double_flip"]
    assert main(argv) == 0
    direct, files_result = (m["result"] for m in json.loads((rep / "metrics.json").read_text())["models"])
    assert direct["entries"] == files_result["entries"]
    # a folder of one-pass predictions is not resumed with flips, nor the other way round
    capsys.readouterr()
    assert _predict(tiny["lidar"], tiny["data"], out, "--render", "0") == 2
    assert "holds predictions of test-time augmentation double_flip" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="an exported ONNX model runs one pass per frame"):
        predict(None, tiny["data"], tmp_path / "o", onnx=tmp_path / "m.onnx", tta="flip")
