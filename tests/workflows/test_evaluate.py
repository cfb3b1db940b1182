"""`drivetl evaluate` end to end on a tiny checkpoint and a tiny team folder, through the real CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from drivetl.cli import main
from drivetl.data.records import Boxes
from drivetl.workflows.evaluate import ModelSpec, evaluate, load_model, open_eval_data, run_model

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["x", "y", "z", "intensity", "elongation"]


def test_cli_writes_report_and_self_labels_give_ap_one(tiny, tmp_path, fleet_files) -> None:
    # 1) the model's own decoded predictions become the labels of a copy of the folder
    loaded = load_model(ModelSpec.parse(str(tiny["lidar"])))
    run = run_model(loaded, open_eval_data(tiny["data"]), score_threshold=0.2)
    assert len(run.frames) == 4 and sum(len(f.detections) for f in run.frames) > 0
    labels = {i: Boxes(f.detections.boxes, f.detections.classes) for i, f in enumerate(run.frames)}
    own = fleet_files.write_folder(tmp_path / "own", labels=labels)
    out = tmp_path / "report"
    rc = main(
        [
            "evaluate",
            "--ckpt",
            str(tiny["lidar"]),
            "--ckpt",
            str(tiny["lidar"]),
            "--name",
            "a",
            "--name",
            "b",
            "--data",
            str(own),
            "--out",
            str(out),
            "--render-frames",
            "1",
            "--score-threshold",
            "0.2",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert [m["name"] for m in doc["models"]] == ["a", "b"]
    summary = doc["models"][0]["result"]["summary"]["LEVEL_2"]["all"]
    assert summary["map"] == pytest.approx(1.0) and summary["maph"] == pytest.approx(1.0)
    entries = [e for e in doc["models"][0]["result"]["entries"] if e["band"] == "all" and e["num_gt"] > 0]
    assert entries and all(e["ap"] == pytest.approx(1.0) for e in entries)
    assert doc["data"]["region"] == [-12.8, -12.8, 12.8, 12.8] and doc["data"]["frames"] == 4
    report = (out / "report.md").read_text()
    assert "| a | 4 | 1.000 | 1.000 |" in report and "| b | 4 | 1.000 | 1.000 |" in report
    for name in ("pr_curves.png", "range_bars.png"):
        assert (out / name).stat().st_size > 1000
    assert len(list((out / "bev").glob("*.png"))) == 2
    # 2) against the real labels the untrained model is far from perfect, and the numbers stay in [0, 1]
    res = evaluate(
        [str(tiny["lidar"])],
        tiny["data"],
        tmp_path / "real",
        render_frames=0,
        figures=False,
        log=None,
        score_threshold=0.2,
    )
    value = res.results["lidar"].mean("ap")
    assert 0.0 <= value < 0.5


def test_split_range_edges_and_adapters_on_base(tiny, tmp_path) -> None:
    from drivetl.models.adapters import apply_lora, save_adapters

    loaded = load_model(ModelSpec.parse(str(tiny["lidar"])))
    apply_lora(loaded.model, ["lidar.backbone.*"], rank=2, alpha=4)
    with torch.no_grad():
        for n, p in loaded.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    adapters = tmp_path / "ad.safetensors"
    save_adapters(loaded.model, adapters, {"method": "lora"})
    out = tmp_path / "r"
    rc = main(
        [
            "evaluate",
            "--ckpt",
            f"{adapters}@{tiny['lidar']}",
            "--ckpt",
            str(tiny["lidar"]),
            "--data",
            str(tiny["data"]),
            "--split",
            "test",
            "--out",
            str(out),
            "--range-edges",
            "0,8",
            "--render-frames",
            "0",
            "--score-threshold",
            "0.2",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["data"]["frames"] == 2 and doc["data"]["split"] == "test"
    assert doc["data"]["range_edges"] == [0.0, 8.0, None]
    assert doc["models"][0]["kind"] == "adapters" and doc["models"][0]["name"] == "ad"
    assert "lora" in " ".join(doc["models"][0]["notes"])
    assert "mAP 0-8 m" in (out / "report.md").read_text()


def test_fusion_health_flags_a_fusion_that_ignores_its_camera(
    tiny, tmp_path, detector_spec_factory, fleet_files
) -> None:
    blind = fleet_files.write_checkpoint(
        tmp_path / "blind.ckpt", detector_spec_factory(camera=True), camera=True, seed=1, zero_camera=True
    )
    out = tmp_path / "fh"
    rc = main(
        [
            "evaluate",
            "--ckpt",
            str(tiny["fusion"]),
            "--ckpt",
            str(blind),
            "--data",
            str(tiny["data"]),
            "--out",
            str(out),
            "--fusion-health",
            "--render-frames",
            "0",
            "--score-threshold",
            "0.2",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    health = doc["fusion_health"]
    assert set(health) == {"fusion", "blind"}
    assert health["fusion"]["camera_coverage"] > 0
    assert health["fusion"]["heatmap_change"] > 0.01
    assert health["blind"]["heatmap_change"] == pytest.approx(0.0, abs=1e-6)
    assert health["blind"]["map_delta"] in (0.0, None)
    assert any("ignores its camera" in w for w in health["blind"]["warnings"])
    assert not any("ignores its camera" in w for w in health["fusion"]["warnings"])
    assert "Fusion health" in (out / "report.md").read_text()


@pytest.mark.parametrize("case", ["missing_ckpt", "wrong_data", "adapter_without_base", "bad_class_map"])
def test_clear_errors_exit_2(case, tiny, tmp_path, capsys) -> None:
    argv = [
        "evaluate",
        "--ckpt",
        str(tiny["lidar"]),
        "--data",
        str(tiny["data"]),
        "--out",
        str(tmp_path / "o"),
    ]
    if case == "missing_ckpt":
        argv[2] = str(tmp_path / "nope.ckpt")
        expect = "nope.ckpt: checkpoint not found"
    elif case == "wrong_data":
        (tmp_path / "empty").mkdir()
        argv[4] = str(tmp_path / "empty")
        expect = "neither a training cache"
    elif case == "adapter_without_base":
        from drivetl.models.adapters import apply_lora, save_adapters

        m = load_model(ModelSpec.parse(str(tiny["lidar"]))).model
        apply_lora(m, ["head.shared"], rank=2)
        save_adapters(m, tmp_path / "x.safetensors")
        argv[2] = str(tmp_path / "x.safetensors")
        expect = "records no base checkpoint"
    else:
        argv += ["--class-map", "car"]
        expect = "write NAME=CLASS"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "drivetl evaluate: error:" in err and expect in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_region_all_counts_far_boxes(tiny, tmp_path, fleet_files) -> None:
    far = Boxes(np.array([[40.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0]]), ("vehicle",))
    labels = {i: far for i in range(2)}
    data = fleet_files.write_folder(tmp_path / "far", frames=2, labels=labels)
    kw = {"render_frames": 0, "figures": False, "log": None, "score_threshold": 0.3}
    inside = evaluate([str(tiny["lidar"])], data, tmp_path / "a", **kw)
    every = evaluate([str(tiny["lidar"])], data, tmp_path / "b", region="all", **kw)
    assert inside.results["lidar"].get("vehicle").num_gt == 0
    assert every.results["lidar"].get("vehicle").num_gt == 2
    assert every.results["lidar"].ap("vehicle") == 0.0 and math.isnan(inside.results["lidar"].ap("vehicle"))


@pytest.mark.parametrize("method", ["film", "lora"])
def test_finetune_checkpoint_and_adapter_file_give_the_same_predictions(method, tiny, tmp_path) -> None:
    """`drivetl finetune`'s two exports (full checkpoint; adapters on the pretrained base) evaluate alike."""
    from drivetl.models.adapters import save_adapters
    from drivetl.train.finetune import FinetuneModule

    module = FinetuneModule(pretrained=str(tiny["lidar"]), method=method, load_head=True)
    with torch.no_grad():  # move the zero-initialized adapter updates away from identity
        for name, p in module.model.named_parameters():
            if p.requires_grad and ("lora_B" in name or "film" in name):
                p.normal_(0, 0.2)
    ckpt = tmp_path / "finetuned.ckpt"
    state = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    torch.save({"state_dict": state, "drivetl": module.finetune_metadata()}, ckpt)
    adapters = save_adapters(module.model, tmp_path / "adapters.safetensors", module.adapter_metadata())
    assert adapters["metadata"]["pretrained"] == str(tiny["lidar"])
    data = open_eval_data(tiny["data"], max_frames=1)
    runs = {}
    for spec in (str(ckpt), str(tmp_path / "adapters.safetensors"), str(tiny["lidar"])):
        loaded = load_model(ModelSpec.parse(spec))
        assert loaded.film == (method == "film") or spec == str(tiny["lidar"])
        runs[spec] = run_model(loaded, data, score_threshold=0.3)
    a, b, base = runs.values()
    for fa, fb in zip(a.frames, b.frames, strict=True):
        np.testing.assert_allclose(fa.detections.boxes, fb.detections.boxes, atol=1e-5)
        assert fa.detections.classes == fb.detections.classes
    assert any(
        len(fa.detections) != len(fc.detections)
        or not np.allclose(fa.detections.scores, fc.detections.scores)
        for fa, fc in zip(a.frames, base.frames, strict=True)
    )


def test_test_time_flips_through_the_cli(tiny, tmp_path, capsys) -> None:
    out = tmp_path / "tta"
    argv = ["evaluate", "--data", str(tiny["data"]), "--out", str(out), "--render-frames", "0"]
    assert main([*argv[:1], "--ckpt", str(tiny["lidar"]), *argv[1:], "--tta", "double_flip"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["data"]["tta"] == "double_flip"
    assert "- test-time augmentation: double flip (4 passes" in (out / "report.md").read_text()
    assert "test-time augmentation: double flip (4 passes" in (out / "report.html").read_text()
    # the averaged maps give other boxes than one pass, on the same frames
    loaded = load_model(ModelSpec.parse(str(tiny["lidar"])))
    data = open_eval_data(tiny["data"])
    plain = run_model(loaded, data, score_threshold=0.2)
    flips = run_model(loaded, data, score_threshold=0.2, tta="double_flip")
    assert [f.key for f in flips.frames] == [f.key for f in plain.frames]
    a = np.concatenate([f.detections.boxes for f in plain.frames])
    b = np.concatenate([f.detections.boxes for f in flips.frames])
    assert len(b) > 0 and (a.shape != b.shape or not np.allclose(a, b))
    # a camera model is refused in one line before anything is written
    assert main([*argv[:1], "--ckpt", str(tiny["fusion"]), *argv[1:3], "--out", str(tmp_path / "cam"),
                 "--tta", "flip"]) == 2
    err = capsys.readouterr().err
    assert "drivetl evaluate: error: --tta (fusion) flip: test-time flips mirror the LiDAR points only" in err
    assert not (tmp_path / "cam" / "metrics.json").exists()
