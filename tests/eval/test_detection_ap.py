"""AP / APH on hand-made frames whose answers are worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from drivetl.data.records import Boxes, FrameKey
from drivetl.errors import ConfigError, DataError
from drivetl.eval import DetectionEvaluator, DetectionResult, Detections, EvalConfig, greedy_match


def _boxes(*centres, size=(4.0, 2.0, 1.5), heading=0.0) -> np.ndarray:
    return np.array([[x, y, 0.75, *size, heading] for x, y in centres], dtype=np.float64)


def _gt(boxes: np.ndarray, cls: str = "vehicle", points=None) -> Boxes:
    n = len(boxes)
    return Boxes(boxes, (cls,) * n, num_points=np.full(n, 100) if points is None else points)


def _det(boxes: np.ndarray, scores, cls: str = "vehicle") -> Detections:
    return Detections(boxes, np.asarray(scores, float), (cls,) * len(boxes))


def _run(frames, config: EvalConfig | None = None) -> DetectionResult:
    ev = DetectionEvaluator(config)
    for pred, gt in frames:
        ev.update(pred, gt)
    return ev.compute()


def test_perfect_predictions_give_ap_and_aph_one():
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(3):
        veh = _boxes(*rng.uniform(-60, 60, (5, 2)), heading=float(rng.uniform(-3, 3)))
        ped = _boxes(*rng.uniform(-60, 60, (3, 2)), size=(0.8, 0.8, 1.8))
        gt = Boxes(np.r_[veh, ped], ("vehicle",) * 5 + ("pedestrian",) * 3, num_points=np.full(8, 50))
        pred = Detections(np.r_[veh, ped], rng.uniform(0.1, 1, 8), gt.classes)
        frames.append((pred, gt))
    res = _run(frames)
    for cls in ("vehicle", "pedestrian"):
        for level in ("LEVEL_1", "LEVEL_2"):
            assert res.ap(cls, "all", level) == 1.0 and res.aph(cls, "all", level) == pytest.approx(1.0)
            e = res.get(cls, "all", level)
            assert e.num_tp == e.num_pred == e.num_gt
    assert res.mean("ap") == 1.0 and res.mean("aph") == pytest.approx(1.0)
    assert math.isnan(res.ap("cyclist")) and res.get("cyclist").num_gt == 0  # no ground truth -> NaN
    for band in res.bands:
        ap = res.ap("vehicle", band)
        assert math.isnan(ap) or ap == 1.0


def test_flipped_headings_keep_ap_and_zero_aph():
    gt_boxes = _boxes((10, 0), (20, 5), (-15, -3), heading=0.4)
    flipped = gt_boxes.copy()
    flipped[:, 6] -= math.pi  # same box, opposite heading: IoU 1, heading accuracy 0
    res = _run([(_det(flipped, [0.9, 0.8, 0.7]), _gt(gt_boxes))])
    assert res.ap("vehicle") == 1.0
    assert res.aph("vehicle") == pytest.approx(0.0, abs=1e-12)


def test_quarter_turn_on_square_boxes_halves_heading_weight():
    gt_boxes = _boxes((10, 0), (20, 5), size=(2.0, 2.0, 1.5))
    turned = gt_boxes.copy()
    turned[:, 6] += math.pi / 2  # a square turned 90 degrees: IoU 1, weight 1 - (pi/2)/pi = 0.5
    res = _run([(_det(turned, [0.9, 0.8]), _gt(gt_boxes))], EvalConfig(recall_points=0))
    assert res.ap("vehicle") == 1.0
    # heading precision 0.5 at recalls 1/2 and 1 (only precision is weighted): area 1 * 0.5
    assert res.aph("vehicle") == pytest.approx(0.5, abs=1e-12)


def test_empty_predictions_give_zero_and_empty_everything_gives_nan():
    gt = _gt(_boxes((10, 0), (20, 0)))
    res = _run([(Detections.empty(), gt)])
    assert res.ap("vehicle") == 0.0 and res.aph("vehicle") == 0.0
    assert res.get("vehicle").num_pred == 0 and res.get("vehicle").num_gt == 2

    res = _run([(Detections.empty(), Boxes.empty())])
    assert res.num_frames == 1
    assert all(math.isnan(e.ap) and math.isnan(e.aph) for e in res.entries.values())
    assert math.isnan(res.mean("ap"))
    d = res.to_dict()
    json.dumps(d, allow_nan=False)  # NaN written as null
    assert d["summary"]["LEVEL_2"]["all"]["map"] is None

    # Predictions without any ground truth: false positives, AP undefined (NaN, left out of means).
    res = _run([(_det(_boxes((5, 5)), [0.9]), Boxes.empty())])
    e = res.get("vehicle")
    assert math.isnan(e.ap) and e.num_pred == 1 and e.num_tp == 0

    assert DetectionEvaluator().compute().num_frames == 0


def test_false_positives_lower_precision_hand_computed():
    # 3 objects; predictions by score: TP (0.9), FP (0.8), TP (0.7), FP (0.6); the third object is missed.
    gt_boxes = _boxes((10, 0), (20, 0), (30, 5))
    pred_boxes = _boxes((10, 0), (-20, 0), (20, 0), (-30, 10))
    frames = [(_det(pred_boxes, [0.9, 0.8, 0.7, 0.6]), _gt(gt_boxes))]
    exact = _run(frames, EvalConfig(recall_points=0)).get("vehicle")
    np.testing.assert_allclose(exact.curve.precision, [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(exact.curve.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # Interpolated precision: 1 up to recall 1/3, 2/3 up to recall 2/3, 0 beyond.
    assert exact.ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    # 101-point grid: recalls 0.00..0.33 (34 points) at 1, 0.34..0.66 (33 points) at 2/3, the rest 0.
    grid = _run(frames).get("vehicle")
    assert grid.ap == pytest.approx((34 * 1 + 33 * 2 / 3) / 101)
    assert (grid.num_gt, grid.num_pred, grid.num_tp) == (3, 4, 2)


def test_equal_scores_do_not_depend_on_frame_order():
    a = (_det(_boxes((10, 0)), [0.5]), _gt(_boxes((10, 0))))
    b = (_det(_boxes((-10, 0)), [0.5]), _gt(_boxes((30, 30))))
    ap_ab, ap_ba = _run([a, b]).ap("vehicle"), _run([b, a]).ap("vehicle")
    assert ap_ab == ap_ba
    # One threshold holding 1 TP + 1 FP over 2 objects: precision 1/2 up to recall 1/2.
    assert _run([a, b], EvalConfig(recall_points=0)).ap("vehicle") == pytest.approx(0.25)


def test_greedy_matching_by_score():
    # Two predictions on one object: the higher score wins; the other is a false positive.
    frame = (_det(_boxes((10, 0), (10.2, 0)), [0.6, 0.9]), _gt(_boxes((10, 0))))
    res = _run([frame], EvalConfig(recall_points=0))
    e = res.get("vehicle")
    assert (e.num_tp, e.num_pred) == (1, 2)
    assert e.ap == pytest.approx(1.0)  # the TP comes first in score order
    # Matching prefers counted ground truth over ignored ground truth.
    sim = np.array([[0.9, 0.8]])
    status, matched = greedy_match(sim, 0.5, np.array([True, False]))
    assert status.tolist() == [1] and matched.tolist() == [1]
    status, matched = greedy_match(np.array([[0.9, 0.2]]), 0.5, np.array([True, False]))
    assert status.tolist() == [-1] and matched.tolist() == [0]


def test_distance_breakdown_uses_each_box_own_range():
    gt_boxes = _boxes((10, 0), (40, 0), (60, 0), (30.5, 0))
    # perfect on 10 m and 40 m, 60 m missed, an FP at 35 m scored highest, and a prediction at
    # 29.7 m (inside 0-30) on the object at 30.5 m (inside 30-50): IoU 3.2 / 4.8 = 2/3 >= 0.5.
    preds = _boxes((10, 0), (40, 0), (35, 5), (29.7, 0), size=(4.0, 2.0, 1.5))
    cfg = EvalConfig(iou_thresholds={"vehicle": 0.5, "pedestrian": 0.5, "cyclist": 0.5, "sign": 0.5},
                     recall_points=0)
    res = _run([(_det(preds, [0.8, 0.7, 0.9, 0.6]), _gt(gt_boxes))], cfg)
    assert res.bands == ("all", "0-30", "30-50", "50+")
    near, mid, far, everything = (res.get("vehicle", b) for b in ("0-30", "30-50", "50+", "all"))
    # 0-30: object at 10 m found (0.8); the 29.7 m prediction's object is in another band -> FP.
    assert (near.num_gt, near.num_pred, near.num_tp) == (1, 2, 1) and near.ap == pytest.approx(1.0)
    # 30-50: FP (0.9) before TP (0.7); the object at 30.5 m has no prediction in its band.
    assert (mid.num_gt, mid.num_pred, mid.num_tp) == (2, 2, 1)
    assert mid.ap == pytest.approx(0.5 * 0.5)
    assert (far.num_gt, far.num_pred, far.ap) == (1, 0, 0.0)
    # all ranges: the 29.7 m prediction matches the 30.5 m object.
    assert (everything.num_gt, everything.num_tp) == (4, 3)
    # custom bands
    frame = (_det(preds, [0.8, 0.7, 0.9, 0.6]), _gt(gt_boxes))
    res = _run([frame], EvalConfig(range_edges=(0, 20, math.inf)))
    assert res.bands == ("all", "0-20", "20+") and res.get("vehicle", "20+").num_gt == 3


def test_difficulty_levels_from_points_and_labels():
    gt_boxes = _boxes((10, 0), (20, 0), (30, 0), (40, 0), (-10, 0))
    points = np.array([50, 3, 0, 80, -1])
    difficulty = np.array([0, 0, 0, 2, 0])  # the 80-point box is labelled LEVEL_2
    gt = Boxes(gt_boxes, ("vehicle",) * 5, num_points=points, difficulty=difficulty)
    # Predict everything except the 3-point box.
    keep = [0, 2, 3, 4]
    pred = _det(gt_boxes[keep], [0.9, 0.8, 0.7, 0.6])
    res = _run([(pred, gt)], EvalConfig(recall_points=0))
    l1, l2 = res.get("vehicle", level="LEVEL_1"), res.get("vehicle", level="LEVEL_2")
    # LEVEL_1: 50-point box and the unknown-points box; predictions on ignored boxes do not count.
    assert (l1.num_gt, l1.num_pred, l1.num_tp, l1.ap) == (2, 2, 2, 1.0)
    # LEVEL_2 adds the 3-point and the labelled box; the 0-point box stays ignored.
    assert (l2.num_gt, l2.num_pred, l2.num_tp) == (4, 3, 3)
    assert l2.ap == pytest.approx(0.75)
    # Counting empty boxes makes the 0-point box LEVEL_2 ground truth.
    res = _run([(pred, gt)], EvalConfig(empty_gt="level_2", recall_points=0))
    l2 = res.get("vehicle", level="LEVEL_2")
    assert (l2.num_gt, l2.num_tp) == (5, 4) and l2.ap == pytest.approx(0.8)
    assert res.get("vehicle", level="LEVEL_1").num_gt == 2


def test_centre_distance_matcher():
    gt = _gt(_boxes((10, 0), (20, 0)))
    # Right place, badly sized (IoU < 0.7), and one 1.5 m off.
    pred_boxes = np.array([[10, 0, 0.75, 2.0, 1.0, 1.0, 0.0], [21.5, 0, 0.75, 4.0, 2.0, 1.5, 0.0]])
    pred = _det(pred_boxes, [0.9, 0.8])
    assert _run([(pred, gt)]).get("vehicle").num_tp == 0
    res = _run([(pred, gt)], EvalConfig(matcher="distance"))
    assert res.ap("vehicle") == 1.0 and res.aph("vehicle") == 1.0
    thresholds = {"vehicle": 1.0, "pedestrian": 1.0, "cyclist": 1.0, "sign": 1.0}
    e = _run([(pred, gt)], EvalConfig(matcher="distance", distance_thresholds=thresholds)).get("vehicle")
    assert (e.num_tp, e.num_pred) == (1, 2)


def test_bev_iou_type_ignores_height():
    gt = _gt(_boxes((10, 0)))
    tall = _boxes((10, 0), size=(4.0, 2.0, 4.0))  # 3D IoU 1.5/4 < 0.7, BEV IoU 1
    assert _run([(_det(tall, [0.9]), gt)]).ap("vehicle") == 0.0
    assert _run([(_det(tall, [0.9]), gt)], EvalConfig(iou_type="bev")).ap("vehicle") == 1.0


def test_classes_are_matched_separately_and_unknown_classes_ignored():
    boxes = _boxes((10, 0))
    gt = Boxes(np.r_[boxes, boxes], ("vehicle", "animal"), num_points=[50, 50])
    pred = Detections(boxes, [0.9], ("pedestrian",))
    res = _run([(pred, gt)])
    assert res.ap("vehicle") == 0.0
    assert math.isnan(res.ap("pedestrian")) and res.get("pedestrian").num_pred == 1


def test_duplicate_frame_keys_count_once():
    frame = (_det(_boxes((10, 0)), [0.9]), _gt(_boxes((10, 0), (20, 0))))
    ev = DetectionEvaluator()
    key = FrameKey("seg", 1)
    ev.update(*frame, key=key)
    ev.update(*frame, key=key)
    ev.update(*frame)
    ev.update(*frame)
    assert len(ev) == 3
    assert ev.compute().get("vehicle").num_gt == 6
    ev.sync()  # no process group: nothing changes
    assert len(ev) == 3
    ev.reset()
    assert len(ev) == 0


def test_detections_accept_labels_and_tensors_and_reject_bad_input():
    det = Detections(torch.zeros(2, 7), torch.tensor([0.5, 0.4]), np.array([0, 1]))
    assert det.classes == ("vehicle", "pedestrian") and det.boxes.dtype == np.float64
    gt = _gt(_boxes((10, 0), (20, 0)))
    from_gt = Detections.from_boxes(gt, [0.3, 0.2])
    assert from_gt.classes == gt.classes and np.array_equal(from_gt.boxes, gt.boxes)
    with pytest.raises(DataError, match="one score and one class"):
        Detections(np.zeros((2, 7)), [0.5], ("vehicle", "vehicle"))
    with pytest.raises(DataError, match="NaN"):
        Detections(np.full((1, 7), np.nan), [0.5], ("vehicle",))
    with pytest.raises(DataError, match="class index"):
        Detections(np.zeros((1, 7)), [0.5], np.array([7]))
    with pytest.raises(TypeError, match="Detections"):
        DetectionEvaluator().update(np.zeros((1, 7)), Boxes.empty())


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError, match="no threshold"):
        EvalConfig(iou_thresholds={"vehicle": 0.7})
    with pytest.raises(ConfigError, match="range_edges"):
        EvalConfig(range_edges=(0, 50, 30))
    with pytest.raises(ConfigError, match="matcher"):
        EvalConfig(matcher="hungarian")
    cfg = EvalConfig(classes=("vehicle",), iou_type="bev", range_edges=(0, 40, math.inf))
    assert EvalConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_result_json_round_trip(tmp_path):
    gt_boxes = _boxes((10, 0), (20, 0), (30, 5))
    res = _run([(_det(_boxes((10, 0), (-20, 0), (20, 0)), [0.9, 0.8, 0.7]), _gt(gt_boxes))])
    path = res.save_json(tmp_path / "metrics.json")
    back = DetectionResult.load_json(path)
    assert back.num_frames == 1 and back.config == res.config
    for key, e in res.entries.items():
        b = back.entries[key]
        assert (b.num_gt, b.num_pred, b.num_tp) == (e.num_gt, e.num_pred, e.num_tp)
        assert (math.isnan(e.ap) and math.isnan(b.ap)) or b.ap == pytest.approx(e.ap, abs=1e-6)
    # The stored curve reproduces AP on the same grid.
    e = back.get("vehicle")
    assert e.curve.interpolated(np.linspace(0, 1, 101)).mean() == pytest.approx(res.ap("vehicle"), abs=1e-6)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="bad.json"):
        DetectionResult.load_json(bad)
