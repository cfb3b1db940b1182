"""`drivetl demo`: stage planning and skipping (fast, with stand-in stages), and a tiny real run (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivetl.errors import ConfigError
from drivetl.workflows import _demo_stages
from drivetl.workflows.demo import STAGES, DemoPlan, plan_stages, run_demo


def test_plan_scales_frames_and_steps() -> None:
    small, big = DemoPlan.for_scale("x", 1.0), DemoPlan.for_scale("x", 4.0)
    assert small.source_frames % 10 == 0 and small.fleet_frames == 110 and small.labeled_frames == 6
    assert big.source_frames == 4 * small.source_frames and big.pretrain_steps == 4 * small.pretrain_steps
    tiny = DemoPlan.for_scale("x", 0.01)
    assert tiny.source_frames == 10 and tiny.fleet_test_frames == 10 and tiny.pretrain_steps >= 2
    with pytest.raises(ConfigError, match="--scale"):
        DemoPlan.for_scale("x", 0)
    assert [s.name for s in plan_stages(small)] == list(STAGES)
    # a stage's record depends on what its outputs depend on, not on unrelated knobs
    assert small.params("source") == DemoPlan.for_scale("x", 1.0, workers=7).params("source")
    assert small.params("pretrain") != big.params("pretrain")
    assert small.params("fleet") == DemoPlan(Path("x"), pretrain_steps=1).params("fleet")


def _stand_ins(monkeypatch, calls: list[str]) -> None:
    """Replace every stage body by one that writes its outputs (the file names the real ones write)."""

    def touch(*paths: Path) -> None:
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")

    def metrics(plan, log):
        calls.append("evaluate")
        from drivetl.eval import DetectionEvaluator, EvalConfig

        res = DetectionEvaluator(EvalConfig(classes=("vehicle",))).compute().to_dict()
        doc = {"models": [{"name": n, "result": res} for n in _demo_stages.MODELS]}
        touch(plan.path("report", "report.md"))
        plan.path("report", "metrics.json").write_text(json.dumps(doc))

    def source(plan, simulate, log, rig=None):
        calls.append("source")
        touch(*[plan.path("source", f"s{i}.tfrecord") for i in range(plan.source_frames // 10)])

    monkeypatch.setattr(_demo_stages, "simulate_source", source)
    monkeypatch.setattr(
        _demo_stages,
        "simulate_fleet",
        lambda plan, sim, log, rig=None: (
            calls.append("fleet"),
            touch(plan.path("fleet", "splits", "test.txt")),
        ),
    )
    monkeypatch.setattr(
        _demo_stages,
        "pretrain",
        lambda plan, log: (calls.append("pretrain"), touch(_demo_stages.pretrained_ckpt(plan))),
    )

    def finetune(plan, kind, log):
        calls.append(kind)
        touch(plan.path("runs", kind, "adapters.safetensors"), plan.path("runs", kind, "finetuned.ckpt"))

    monkeypatch.setattr(_demo_stages, "finetune", finetune)
    monkeypatch.setattr(_demo_stages, "evaluate", metrics)


def test_stages_skip_when_done_and_rerun_when_the_plan_changes(tmp_path, monkeypatch) -> None:
    calls: list[str] = []
    _stand_ins(monkeypatch, calls)
    plan = DemoPlan.for_scale(tmp_path / "demo", 1.0)
    lines: list[str] = []
    first = run_demo(plan, log=lines.append, until="pretrain")
    assert calls == ["source", "fleet", "pretrain"] and set(first.seconds) == {"source", "fleet", "pretrain"}
    assert json.loads((tmp_path / "demo" / "stages" / "pretrain.json").read_text())["params"] == plan.params(
        "pretrain"
    )
    calls.clear()
    result = run_demo(plan, log=lines.append)
    assert calls == ["adapt", "scratch", "evaluate"]
    assert result.seconds["source"] is None and "done already, skipped" in "\n".join(lines)
    assert "| scratch |" in result.table and "| adapted |" in result.table
    # a deleted output reruns its stage only; more fine-tuning steps rerun adapt, scratch and evaluate
    calls.clear()
    (tmp_path / "demo" / "source" / "s3.tfrecord").unlink()
    run_demo(plan, log=lines.append)
    assert calls == ["source"]
    calls.clear()
    run_demo(DemoPlan(plan.out, finetune_steps=plan.finetune_steps + 1), log=lines.append)
    assert calls == ["adapt", "scratch", "evaluate"]
    # the fleet's region changes the fleet data and everything trained or scored on it
    calls.clear()
    run_demo(DemoPlan(plan.out, fleet_region="us"), log=lines.append)
    assert calls == ["fleet", "adapt", "scratch", "evaluate"]
    with pytest.raises(ConfigError, match="--fleet-region 'mars'"):
        DemoPlan(plan.out, fleet_region="mars")
    # the test-time augmentation changes the evaluation only
    calls.clear()
    run_demo(DemoPlan(plan.out, fleet_region="us", tta="none"), log=lines.append)
    assert calls == ["evaluate"]
    with pytest.raises(ConfigError, match="--tta 'rotate'"):
        DemoPlan(plan.out, tta="rotate")
    calls.clear()
    run_demo(plan, log=lines.append, force=True, until="fleet")
    assert calls == ["source", "fleet"]
    # --force starts the pretraining over: its last checkpoint (which it would resume) is cleared
    last = tmp_path / "demo" / "runs" / "pretrain" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_bytes(b"step 480")
    calls.clear()
    run_demo(plan, log=lines.append, until="pretrain")
    assert calls == [] and last.is_file()
    run_demo(plan, log=lines.append, force=True, until="pretrain")
    assert calls == ["source", "fleet", "pretrain"] and not last.exists()
    # so does a plan with other pretraining steps (resuming another schedule is not this plan's run)
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_bytes(b"step 480")
    calls.clear()
    run_demo(DemoPlan(plan.out, pretrain_steps=plan.pretrain_steps + 1), log=lines.append, until="pretrain")
    assert calls == ["pretrain"] and not last.exists()
    with pytest.raises(ConfigError, match="--until"):
        run_demo(plan, until="nothing")


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path) -> None:
    from drivetl.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scale", "0.05"]) == 0
    doc = json.loads((out / "report" / "metrics.json").read_text())
    assert [m["name"] for m in doc["models"]] == ["scratch", "source-only", "adapted"]
    assert doc["data"]["split"] == "test" and doc["data"]["frames"] == 10
    # The test frames hold labelled objects, so every model gets a number (None means no class had
    # ground truth), and all three are judged on the same objects.
    gt_counts = []
    for m in doc["models"]:
        result = m["result"]
        assert result["num_frames"] == 10
        for level in ("LEVEL_1", "LEVEL_2"):
            value = result["summary"][level]["all"]["map"]
            assert value is not None and 0.0 <= value <= 1.0, (m["name"], level, value)
        entries = [e for e in result["entries"] if e["band"] == "all"]
        gt_counts.append({(e["class"], e["level"]): e["num_gt"] for e in entries})
    assert gt_counts[0] == gt_counts[1] == gt_counts[2]
    assert gt_counts[0][("vehicle", "LEVEL_2")] > 0
    assert (out / "report" / "pr_curves.png").is_file() and (
        out / "runs" / "adapt" / "adapters.safetensors"
    ).is_file()
    # headline 3D IoU at Waymo's thresholds, then BEV IoU and centre distance of the same predictions
    assert doc["models"][0]["result"]["config"]["matcher"] == "iou"
    assert set(doc["other_matchers"]) == {"bev", "distance"}
    assert set(doc["box_errors"]["adapted"]) == {"vehicle", "pedestrian"}
    assert (out / "report" / "heading_errors.png").is_file()
    # scored with the double flip, and in one pass beside it
    assert doc["data"]["tta"] == "double_flip"
    plain = json.loads((out / "report" / "one_pass" / "metrics.json").read_text())
    assert plain["data"]["tta"] == "none"
    assert [m["name"] for m in plain["models"]] == list(_demo_stages.MODELS)
    # what each run was given: fine-tuning from the pretrained model at the lower learning rate,
    # the from-scratch run at the higher one, pretraining with a core left to each loader worker
    import yaml

    from drivetl.workflows import _demo_config as cfg

    written = {
        k: yaml.safe_load((out / "configs" / f"{k}.yaml").read_text())
        for k in ("pretrain", "adapt", "scratch")
    }
    assert written["adapt"]["model"]["init_args"]["lr"] == cfg.FINETUNE_LR < cfg.SCRATCH_LR
    assert written["scratch"]["model"]["init_args"]["lr"] == cfg.SCRATCH_LR
    # both fine-tuning runs validate and export their weight average, the same recipe
    decays = {written[k]["model"]["init_args"]["ema_decay"] for k in ("adapt", "scratch")}
    assert decays == {cfg.FINETUNE_EMA} and cfg.FINETUNE_EMA > 0
    assert written["pretrain"]["cpu_threads"] == "auto" and "cpu_threads" not in written["adapt"]
    # the source streets follow the source region, the fleet's the fleet region
    sources = [p.name for p in (out / "source").glob("*.tfrecord")]
    assert sources and all(f"_{cfg.SOURCE_REGION}_" in name for name in sources)
    assert cfg.SOURCE_REGION != cfg.FLEET_REGION
    tests = (out / "fleet" / "splits" / "test.txt").read_text().split()
    assert tests and all(f"_{cfg.FLEET_REGION}_" in line for line in tests)


def test_lidar_runs_paste_inside_the_detector_range_and_fusion_runs_do_not(tmp_path) -> None:
    from drivetl.data.paste import PasteConfig
    from drivetl.workflows import _demo_config as cfg
    from drivetl.workflows import _demo_fusion

    plan = DemoPlan.for_scale(tmp_path, 0.05, modality="fusion")
    x0, y0, _, x1, y1, _ = cfg.detector_config()["init_args"]["lidar"]["init_args"]["point_range"]
    pre = cfg.pretrain_config(tmp_path, tmp_path / "source", 4, 2, 0, 0)["data"]["init_args"]["paste"]
    fine = cfg.finetune_config(
        tmp_path, tmp_path / "p.ckpt", tmp_path / "fleet", method="lora", freeze="adapters+head", steps=4,
        labeled_fraction=0.1, batch_size=2, workers=0, seed=0,
    )["data"]["init_args"]["paste"]
    for paste, bank_frames in ((pre, 60), (fine, None)):
        config = PasteConfig(**paste)  # what the data module builds from it
        assert set(config.counts) == set(cfg.DEMO_CLASSES) and all(v > 0 for v in config.counts.values())
        assert config.area == (x0, y0, x1, y1) and config.bank_frames == bank_frames
    assert "paste" not in _demo_fusion.pretrain_config(plan, tmp_path)["data"]["init_args"]
    no_paste = cfg.finetune_config(
        tmp_path, tmp_path / "p.ckpt", tmp_path / "fleet", method="lora", freeze="adapters+head", steps=4,
        labeled_fraction=0.1, batch_size=2, workers=0, seed=0, paste=False,
    )
    assert "paste" not in no_paste["data"]["init_args"]


def test_shipped_pretraining_configs_use_the_demos_ground_window() -> None:
    """What the demo measured is what configs/pretrain ship: heights above a local ground taken
    over the same width (about 3.5 m) in every shipped LiDAR encoder."""
    import yaml

    from drivetl.workflows import _demo_config as cfg

    demo = cfg.detector_config()["init_args"]["lidar"]["init_args"]
    assert demo["height_features"] and demo["ground_window"] % 2 == 1
    width = demo["ground_window"] * demo["voxel_size"][0]
    shipped = sorted((cfg.rigs_dir().parent / "pretrain").glob("*.yaml"))
    assert len(shipped) >= 4
    for path in shipped:
        lidar = yaml.safe_load(path.read_text())["model"]["init_args"]["detector"]["init_args"]["lidar"]
        enc = lidar["init_args"]
        assert enc["height_features"] and enc["ground_window"] % 2 == 1, path.name
        assert abs(enc["ground_window"] * enc["voxel_size"][0] - width) < 0.25, path.name
