"""`drivetl demo --modality fusion`: the camera rigs, the fusion detector config, the stage plan and
the reuse of LiDAR-only runs (fast, with stand-in stages), the comparison section, and a tiny real
run (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from drivetl.data.records import Boxes
from drivetl.errors import ConfigError
from drivetl.eval import DetectionEvaluator, Detections
from drivetl.workflows import _demo_config as cfg
from drivetl.workflows import _demo_fusion as fusion
from drivetl.workflows import _demo_stages
from drivetl.workflows._evaluate_report import FusionHealth
from drivetl.workflows.demo import CAMERA_SCALE, FUSION_STAGES, STAGES, DemoPlan, plan_stages, run_demo


def _pitch_deg(camera) -> float:
    """Nose-down pitch of the camera's optical axis (Waymo camera frame: x forward), degrees."""
    forward = np.asarray(camera.vehicle_from_camera)[:3, 0]
    return math.degrees(math.asin(-forward[2]))


def test_fusion_rigs_cameras_differ_in_intrinsics_distortion_and_mounting() -> None:
    src, fleet = fusion.source_rig(CAMERA_SCALE), fusion.fleet_rig(CAMERA_SCALE)
    # the LiDARs are the LiDAR-only demo's, exactly
    for with_cam, lidar_only in ((src, cfg.source_rig()), (fleet, cfg.fleet_rig())):
        assert [lid.name for lid in with_cam.lidars] == [lid.name for lid in lidar_only.lidars]
        for a, b in zip(with_cam.lidars, lidar_only.lidars, strict=True):
            assert np.array_equal(a.vehicle_from_lidar, b.vehicle_from_lidar) and a.columns == b.columns
    a, b = src.camera(fusion.CAMERA), fleet.camera(fusion.CAMERA)
    # intrinsics: about 50 degrees across against about 110, other focal length per pixel and aspect
    assert a.fov_deg()[0] < 60 and b.fov_deg()[0] > 100
    assert a.fx / a.width > 1.5 * b.fx / b.width and (a.width, a.height) != (b.width, b.height)
    # distortion: mild pincushion-free lens against strong barrel distortion
    assert a.distortion != b.distortion and a.k1 > 0 > b.k1 and abs(b.k1) > 5 * abs(a.k1)
    # mounting: height, position and pitch
    ta, tb = np.asarray(a.vehicle_from_camera)[:3, 3], np.asarray(b.vehicle_from_camera)[:3, 3]
    assert ta[2] - tb[2] > 0.5 and abs(ta[0] - tb[0]) > 0.05
    assert abs(_pitch_deg(a)) < 0.1 and _pitch_deg(b) == pytest.approx(4.0, abs=0.01)
    # images at a CPU-sized resolution, intrinsics scaled with them; the model's input is the source's
    assert (a.width, a.height) == (144, 96) and a.fx == pytest.approx(2050 * 144 / 1920)
    assert fusion.image_size(CAMERA_SCALE) == (a.height, a.width)
    assert max(b.width, b.height) <= 200


def test_fusion_detector_config_builds_through_the_allow_list_and_adapts_both_branches(tmp_path) -> None:
    from drivetl.models.adapters import AdapterSpec, apply_method, build_detector, freeze_model
    from drivetl.models.build import instantiate, validate

    spec = fusion.detector_config()
    validate(spec)  # what a checkpoint's stored config must pass
    model = instantiate(spec)
    assert model.camera is not None and model.fusion is not None and model.align_head is not None
    lidar_only = cfg.detector_config()["init_args"]
    assert spec["init_args"]["lidar"] == lidar_only["lidar"]  # the LiDAR branch is the demo's
    assert spec["init_args"]["head_channels"] == lidar_only["head_channels"]
    assert model.fusion.out_channels == model.lidar.out_channels
    # fine-tuning's build (pretraining heads left out), then the demo's adapter recipe
    ft, _ = build_detector(spec, "fusion demo")
    assert ft.align_head is None and ft.camera is not None
    names = list(ft.state_dict())
    spec_ad = AdapterSpec(method="lora", freeze="adapters+head")
    apply_method(ft, spec_ad)
    freeze_model(ft, spec_ad, names)
    trainable = {n for n, p in ft.named_parameters() if p.requires_grad}
    for part in ("lidar.neck", "camera.backbone.neck", "camera.mix", "fusion", "head"):
        assert any(n.startswith(part) for n in trainable), part
    assert any("lora" in n for n in trainable if n.startswith("camera."))
    frozen_cam = [
        n for n, p in ft.named_parameters() if n.startswith("camera.backbone.stem") and not p.requires_grad
    ]
    assert frozen_cam and not any(n.startswith("camera.backbone.stem") for n in trainable)
    # the pretraining config asks for the camera at the model's input size, and the alignment objective
    plan = DemoPlan.for_scale(tmp_path, 1.0, modality="fusion")
    pre = fusion.pretrain_config(plan, tmp_path / "run")
    data = pre["data"]["init_args"]
    assert data["image_size"] == [96, 144] and data["camera_names"] == [fusion.CAMERA]
    assert pre["model"]["init_args"]["objectives"] == {"detection": 1.0, "alignment": fusion.ALIGNMENT_WEIGHT}
    assert pre["trainer"]["max_steps"] == plan.pretrain_steps  # the same steps as the LiDAR-only run


def _stand_ins(monkeypatch, calls: list[str], rigs: dict[str, object]) -> None:
    """Every stage body replaced by one that writes its outputs (the file names the real ones write)."""

    def touch(*paths: Path) -> None:
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")

    def source(plan, simulate, log, rig=None):
        calls.append("source")
        rigs["source"] = rig
        touch(*[plan.path("source", f"s{i}.tfrecord") for i in range(plan.source_frames // 10)])

    def fleet(plan, simulate, log, rig=None):
        calls.append("fleet")
        rigs["fleet"] = rig
        touch(plan.path("fleet", "splits", "test.txt"))

    def finetune(plan, kind, log):
        calls.append(kind)
        touch(plan.path("runs", kind, "adapters.safetensors"), plan.path("runs", kind, "finetuned.ckpt"))

    def evaluate(name):
        def run(plan, log):
            calls.append(name)
            touch(plan.path("report", "metrics.json"), plan.path("report", "report.md"))
            if name == "evaluate-fusion":
                touch(plan.path("report", "fusion.png"))

        return run

    monkeypatch.setattr(_demo_stages, "simulate_source", source)
    monkeypatch.setattr(_demo_stages, "simulate_fleet", fleet)
    monkeypatch.setattr(
        _demo_stages,
        "pretrain",
        lambda plan, log: (calls.append("pretrain"), touch(_demo_stages.pretrained_ckpt(plan))),
    )
    monkeypatch.setattr(_demo_stages, "finetune", finetune)
    monkeypatch.setattr(_demo_stages, "evaluate", evaluate("evaluate"))
    monkeypatch.setattr(
        fusion,
        "pretrain",
        lambda plan, log: (
            calls.append("fusion_pretrain"),
            touch(_demo_stages.pretrained_ckpt(plan, fusion.PRETRAIN_RUN)),
        ),
    )
    monkeypatch.setattr(
        fusion,
        "adapt",
        lambda plan, log: (
            calls.append("fusion_adapt"),
            touch(plan.path("runs", fusion.ADAPT_RUN, "adapters.safetensors")),
        ),
    )
    monkeypatch.setattr(fusion, "evaluate", evaluate("evaluate-fusion"))
    monkeypatch.setattr(_demo_stages, "summary_table", lambda report: ("", {}))
    monkeypatch.setattr(fusion, "summary", lambda report: "")


def test_fusion_plan_reuses_lidar_runs_and_resimulates_the_data_with_cameras(tmp_path, monkeypatch) -> None:
    calls: list[str] = []
    rigs: dict[str, object] = {}
    _stand_ins(monkeypatch, calls, rigs)
    out = tmp_path / "demo"
    lidar = DemoPlan.for_scale(out, 1.0)
    both = DemoPlan.for_scale(out, 1.0, modality="fusion")
    assert [s.name for s in plan_stages(both)] == list(FUSION_STAGES) and [
        s.name for s in plan_stages(lidar)
    ] == list(STAGES)
    with pytest.raises(ConfigError, match="--modality"):
        DemoPlan.for_scale(out, 1.0, modality="radar")
    with pytest.raises(ConfigError, match="--until"):
        run_demo(lidar, log=lambda m: None, until="fusion_adapt")

    run_demo(lidar, log=lambda m: None)
    assert calls == ["source", "fleet", "pretrain", "adapt", "scratch", "evaluate"]
    assert rigs == {"source": None, "fleet": None}  # the LiDAR-only rigs (the stage's default)
    stale = out / "source" / "lidar_only_marker"
    stale.write_text("x")

    # fusion in the same folder: the data again, with cameras (the old folder cleared first), the
    # LiDAR-only runs reused, then the fusion runs and the evaluation of both
    calls.clear()
    lines: list[str] = []
    result = run_demo(both, log=lines.append)
    assert calls == ["source", "fleet", "fusion_pretrain", "fusion_adapt", "evaluate-fusion"]
    assert not stale.exists()
    assert (
        [c.name for c in rigs["source"].cameras] == [fusion.CAMERA] == [c.name for c in rigs["fleet"].cameras]
    )
    assert result.seconds["pretrain"] is None and result.seconds["fusion_pretrain"] is not None
    record = json.loads((out / "stages" / "source.json").read_text())
    assert record["params"]["modality"] == "fusion" and record["params"]["camera_scale"] == CAMERA_SCALE

    calls.clear()
    run_demo(both, log=lambda m: None)
    assert calls == []  # everything done
    calls.clear()
    # a changed camera scale reruns the data, the fusion runs and the evaluation, not the LiDAR runs
    run_demo(DemoPlan(out, modality="fusion", camera_scale=0.05), log=lambda m: None)
    assert calls == ["source", "fleet", "fusion_pretrain", "fusion_adapt", "evaluate-fusion"]
    # back to LiDAR-only: the data without cameras, the report of three models (fusion figure gone)
    calls.clear()
    run_demo(lidar, log=lambda m: None)
    assert calls == ["source", "fleet", "evaluate"] and not (out / "report" / "fusion.png").exists()


def _result(frames):
    ev = DetectionEvaluator()
    for det, gt in frames:
        ev.update(det, gt)
    return ev.compute()


def test_comparison_section_reports_both_ways_of_measuring_the_camera(tmp_path) -> None:
    veh = np.array([[10.0, 2.0, 0.8, 4.5, 2.0, 1.6, 0.3], [-8.0, -5.0, 0.8, 4.5, 2.0, 1.6, -1.0]])
    ped = np.array([[6.0, -3.0, 0.9, 0.8, 0.8, 1.8, 0.0]])
    gt = Boxes(np.r_[veh, ped], ("vehicle", "vehicle", "pedestrian"), num_points=np.full(3, 50))
    everything = Detections(np.r_[veh, ped], np.array([0.9, 0.8, 0.7]), gt.classes)
    vehicles = Detections(veh, np.array([0.9, 0.8]), ("vehicle", "vehicle"))
    nothing = Detections(np.zeros((0, 7)), np.zeros(0), ())
    lidar_model = _result([(vehicles, gt)])  # vehicles only: mAP 0.5
    fused = _result([(everything, gt)])  # both classes: mAP 1
    blind = _result([(nothing, gt)])  # the fusion model without cameras: nothing
    results = {"scratch": blind, "source-only": blind, "adapted": lidar_model, "fusion adapted": fused}
    health = FusionHealth("fusion adapted", 1.0, 0.0, 1.0, 0.0, heat_change=0.25, coverage=0.3, without=blind)
    doc = fusion.comparison(results, {"fusion adapted": health})
    assert [r["model"] for r in doc["rows"]] == ["adapted"]  # source-only has no fusion partner here
    row = doc["rows"][0]
    assert row["map"] == {"lidar": 0.5, "fusion": 1.0, "cameras_hidden": 0.0}
    assert row["ap"]["vehicle"] == {"lidar": 1.0, "fusion": 1.0, "cameras_hidden": 0.0}
    assert row["ap"]["pedestrian"]["lidar"] == 0.0 and row["heatmap_change"] == 0.25
    assert doc["thresholds"] == {"vehicle": 0.7, "pedestrian": 0.5, "cyclist": 0.5, "sign": 0.5}
    json.dumps(doc, allow_nan=False)  # what fusion.json holds
    text = fusion.comparison_markdown(doc, figure="fusion.png")
    assert "## LiDAR-only vs fusion" in text and "vehicle AP@0.7 LiDAR / fusion" in text
    assert "| adapted | 0.500 | 1.000 | +0.500 | 0.000 | 1.000 / 1.000 | 0.000 / 1.000 |" in text
    assert "scores +0.500 mAP against the LiDAR-only model" in text and "worth +1.000 mAP" in text
    assert "25.0%" in text and "![LiDAR-only vs fusion](fusion.png)" in text
    png = fusion.write_figure(doc, tmp_path / "fusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_fusion_demo_end_to_end(tmp_path) -> None:
    """LiDAR-only demo, then the fusion demo in the same folder, a few steps each: the LiDAR-only runs
    are reused, and the report holds the LiDAR-vs-fusion comparison and the fusion health."""
    out = tmp_path / "demo"
    sizes = dict(
        source_frames=10,
        fleet_train_frames=10,
        fleet_val_frames=10,
        fleet_test_frames=10,
        pretrain_steps=4,
        finetune_steps=4,
        workers=1,
    )
    run_demo(DemoPlan(out, **sizes), log=lambda m: None, until="scratch")
    lines: list[str] = []
    result = run_demo(DemoPlan(out, modality="fusion", **sizes), log=lines.append)
    assert {k for k, v in result.seconds.items() if v is not None} == {
        "source",
        "fleet",
        "fusion_pretrain",
        "fusion_adapt",
        "evaluate",
    }
    doc = json.loads((out / "report" / "metrics.json").read_text())
    assert [m["name"] for m in doc["models"]] == list(fusion.MODELS)
    assert [m["camera_names"] for m in doc["models"]][-2:] == [[fusion.CAMERA]] * 2
    assert set(doc["fusion_health"]) == {"fusion source-only", "fusion adapted"}
    for h in doc["fusion_health"].values():
        assert h["camera_coverage"] > 0.05 and h["heatmap_change"] is not None  # the camera saw the scene
    comp = json.loads((out / "report" / "fusion.json").read_text())
    assert [r["model"] for r in comp["rows"]] == ["source-only", "adapted"]
    for r in comp["rows"]:
        assert set(r["map"]) == {"lidar", "fusion", "cameras_hidden"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in r["map"].values())
    report = (out / "report" / "report.md").read_text()
    assert report.index("## LiDAR-only vs fusion") < report.index("## Comparison")
    assert "## Fusion health (cameras hidden)" in report and "| fusion adapted |" in report
    assert (out / "report" / "fusion.png").is_file()
    assert "LiDAR-only vs fusion" in result.table and "heatmap change without cameras" in result.table
    # the fleet data the fusion models saw carries the fleet camera
    rig = json.dumps((out / "fleet" / "rig.yaml").read_text())
    assert "FRONT" in rig
    # the LiDAR-only runs paste objects, the fusion runs (whose camera would not see them) do not
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (out / "configs").glob("*.yaml")}
    pasting = {k for k, c in configs.items() if "paste" in c["data"]["init_args"]}
    assert pasting == {"pretrain", "adapt", "scratch"}
    assert {"fusion_pretrain", "fusion_adapt"} <= set(configs)
