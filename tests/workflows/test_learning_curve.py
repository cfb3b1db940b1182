"""The learning curve (`tools/learning_curve.py`): step lists, points from an evaluation's
metrics.json, the table and the figure (fast), and a tiny run end to end (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drivetl.data.records import Boxes
from drivetl.errors import ConfigError
from drivetl.eval import DetectionEvaluator, Detections, EvalConfig
from drivetl.workflows.demo import DemoPlan
from drivetl.workflows.learning_curve import (
    CurvePlan,
    curve_table,
    default_steps,
    plot_curve,
    points_from_metrics,
    run_curve,
)


def test_steps_and_plan_checks(tmp_path) -> None:
    assert default_steps(400) == (0, 50, 100, 200, 400, 800, 1600)
    assert default_steps(2) == (0, 1, 2, 4, 8)
    demo = DemoPlan.for_scale(tmp_path, 1.0)
    plan = CurvePlan(demo, (400, 0, 50, 50))
    assert plan.steps == (0, 50, 400) and plan.root == tmp_path / "curve"
    # a run's record names its model and steps, and the demo's data and recipe, not the demo's own
    # fine-tuning length (the curve sets its own)
    assert plan.params("adapted")["steps"] == [0, 50, 400] and "finetune_steps" not in plan.params("adapted")
    assert plan.params("adapted") != CurvePlan(demo, (0, 50)).params("adapted")
    for bad in ((), (0,), (-1, 10)):
        with pytest.raises(ConfigError, match="--steps"):
            CurvePlan(demo, bad)
    with pytest.raises(ConfigError, match="LiDAR-only"):
        CurvePlan(DemoPlan.for_scale(tmp_path, 1.0, modality="fusion"), (0, 10))


def _result(found_vehicles: int, found_pedestrians: int, config: EvalConfig | None = None):
    """One frame with two vehicles and one pedestrian, of which the first few are predicted exactly."""
    veh = np.array([[10.0, 2.0, 0.8, 4.5, 2.0, 1.6, 0.3], [-8.0, -5.0, 0.8, 4.5, 2.0, 1.6, -1.0]])
    ped = np.array([[6.0, -3.0, 0.9, 0.8, 0.8, 1.8, 0.0]])
    gt = Boxes(np.r_[veh, ped], ("vehicle", "vehicle", "pedestrian"), num_points=np.full(3, 50))
    boxes = np.r_[veh[:found_vehicles], ped[:found_pedestrians]]
    classes = ("vehicle",) * found_vehicles + ("pedestrian",) * found_pedestrians
    ev = DetectionEvaluator(config or EvalConfig(classes=("vehicle", "pedestrian")))
    ev.update(Detections(boxes, np.linspace(0.9, 0.5, len(boxes)), classes), gt)
    return ev.compute().to_dict()


def _metrics(entries: dict[str, tuple[int, int]]) -> dict:
    """A metrics.json as `drivetl evaluate` writes it: models, and the centre-distance matcher."""
    distance = EvalConfig(classes=("vehicle", "pedestrian"), matcher="distance")
    return {
        "models": [{"name": n, "result": _result(*found)} for n, found in entries.items()],
        "other_matchers": {"distance": {n: _result(2, 1, distance) for n in entries}},
    }


def test_points_table_and_figure(tmp_path) -> None:
    source = points_from_metrics(_metrics({"source-only": (1, 0)}), {"source-only": None}, "source-only")
    doc = _metrics({"adapted step 0": (1, 0), "adapted step 8": (2, 1), "adapted step 2": (2, 0)})
    names = {"adapted step 0": 0, "adapted step 8": 8, "adapted step 2": 2}
    adapted = points_from_metrics(doc, names, "adapted")
    assert [p["step"] for p in adapted] == [0, 2, 8]  # in step order
    by_step = {p["step"]: p for p in adapted}
    assert by_step[8]["map"] == 1.0 and by_step[8]["ap"] == {"vehicle": 1.0, "pedestrian": 1.0}
    assert by_step[2]["ap"]["pedestrian"] == 0.0 and by_step[2]["map"] == 0.5
    half = round(51 / 101, 6)  # one of two vehicles: precision 1 up to recall 0.5, 51 of 101 recall points
    assert by_step[0]["ap"]["vehicle"] == half and by_step[0]["map_distance"] == 1.0
    assert source[0]["step"] is None and source[0]["map"] == by_step[0]["map"]
    # a model of the evaluation that is not a curve point is left out
    assert points_from_metrics(doc, {"adapted step 2": 2}, "adapted") == [by_step[2]]
    scratch = points_from_metrics(_metrics({"scratch step 0": (0, 0), "scratch step 8": (1, 1)}), {
        "scratch step 0": 0, "scratch step 8": 8}, "scratch")  # fmt: skip
    curve = {"plan": {"labeled_frames": 6, "seed": 0}, "points": source + adapted + scratch}
    json.dumps(curve, allow_nan=False)  # what learning_curve.json holds
    table = curve_table(curve)
    assert f"source-only {half / 2:.3f}" in table and "| steps | adapted | scratch |" in table
    assert f"| 0 | {half / 2:.3f} | 0.000 |" in table and "| 2 | 0.500 |  |" in table
    assert f"| 8 | 1.000 | {(1 + half) / 2:.3f} |" in table
    png = plot_curve(curve, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_learning_curve_end_to_end(tmp_path) -> None:
    demo = DemoPlan(
        tmp_path / "lc",
        source_frames=10,
        fleet_train_frames=10,
        fleet_val_frames=10,
        fleet_test_frames=10,
        pretrain_steps=4,
        finetune_steps=4,
        workers=1,
    )
    plan = CurvePlan(demo, (0, 2, 3))
    curve = run_curve(plan, log=lambda m: None)
    doc = json.loads((plan.root / "learning_curve.json").read_text())
    assert doc == curve and (plan.root / "learning_curve.png").is_file()
    pts = {(p["model"], p["step"]): p for p in doc["points"]}
    assert set(pts) == {("source-only", None)} | {(m, s) for m in ("adapted", "scratch") for s in (0, 2, 3)}
    for p in pts.values():
        assert p["map"] is not None and 0.0 <= p["map"] <= 1.0 and set(p["ap"]) == {"vehicle", "pedestrian"}
        assert {"map_bev", "map_distance"} <= set(p)
    # the adapted run starts as the pretrained model (LoRA starts as the identity): same predictions
    for key in ("map", "maph", "map_bev", "map_distance"):
        assert pts[("adapted", 0)][key] == pts[("source-only", None)][key], key
    assert doc["plan"]["steps"] == [0, 2, 3] and doc["test_frames"] == 10
    # a rerun reuses every run and evaluation
    lines: list[str] = []
    assert run_curve(plan, log=lines.append)["points"] == curve["points"]
    assert sum("checkpoints present, skipped" in m for m in lines) == 2
