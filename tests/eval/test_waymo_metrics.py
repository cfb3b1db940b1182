"""APH, Hungarian matching and the score-cutoff integration as Waymo's official op defines them.

Every expected value is worked out by hand in the comments, from the official definitions:
heading accuracy h = 1 - |dheading| / pi of each true positive; APH uses the precision
sum(h) / (TP + FP) at the plain recall TP / (TP + FN).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from drivetl.data.records import Boxes
from drivetl.errors import ConfigError
from drivetl.eval import (
    DetectionEvaluator,
    DetectionResult,
    Detections,
    EvalConfig,
    PRCurve,
    cutoff_average_precision,
    hungarian_match,
)


def _square(x: float, y: float = 0.0, side: float = 2.0, heading: float = 0.0) -> list[float]:
    """A box with a square footprint: a quarter turn keeps IoU 1 and halves the heading accuracy."""
    return [x, y, 0.75, side, side, 1.5 if side > 1 else 1.8, heading]


def _run(frames, config: EvalConfig) -> DetectionResult:
    ev = DetectionEvaluator(config)
    for i, (pred, gt) in enumerate(frames):
        ev.update(pred, gt, key=i)
    return ev.compute()


def _four_vehicles():
    # Objects at 10, 20, 30 (all ranges 0-30) and 40 m. Predictions by score:
    #   0.9 on the 10 m object, same heading        TP, h = 1
    #   0.8 on the 20 m object, a quarter turn      TP, h = 0.5
    #   0.7 nowhere near an object                  FP
    #   0.6 on the 30 m object, heading flipped     TP, h = 0
    #   the 40 m object is missed.
    gt = Boxes(np.array([_square(10), _square(20), _square(-30), _square(0, 40)]), ("vehicle",) * 4,
               num_points=np.full(4, 100))
    pred = Detections(
        np.array([
            _square(10), _square(20, heading=math.pi / 2), _square(5, 5), _square(-30, heading=math.pi)
        ]),
        np.array([0.9, 0.8, 0.7, 0.6]), ("vehicle",) * 4,
    )
    return [(pred, gt)]


def test_aph_weights_precision_not_recall_hand_computed():
    # Thresholds 0.9 / 0.8 / 0.7 / 0.6: recall 1/4, 1/2, 1/2, 3/4; precision 1, 1, 2/3, 3/4;
    # heading precision 1/1, 1.5/2, 1.5/3, 1.5/4 = 1, 0.75, 0.5, 0.375.
    res = _run(_four_vehicles(), EvalConfig(recall_points=0)).get("vehicle")
    np.testing.assert_allclose(res.curve.recall, [0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(res.curve.precision, [1, 1, 2 / 3, 0.75])
    np.testing.assert_allclose(res.curve.heading_precision, [1, 0.75, 0.5, 0.375])
    # Area under the max-precision-to-the-right step curve:
    #   AP  = 0.25 * 1 + 0.25 * 1    + 0.25 * 0.75  = 0.6875
    #   APH = 0.25 * 1 + 0.25 * 0.75 + 0.25 * 0.375 = 0.53125
    # (weighting the recall too, as drivetl once did, would give 0.25 * 1 + 0.125 * 0.75 = 0.34375)
    assert res.ap == pytest.approx(0.6875)
    assert res.aph == pytest.approx(0.53125)


def test_aph_with_the_official_score_cutoff_integration_hand_computed():
    # Cutoffs 0.00..1.00: above 0.9 nothing (recall 0, precision set to 1); (0.8, 0.9]: recall 1/4;
    # (0.7, 0.8]: 1/2 at precision 1; (0.6, 0.7]: 1/2 at 2/3; <= 0.6: 3/4 at 3/4.
    # Best precision per recall: {0: 1, 1/4: 1, 1/2: 1, 3/4: 3/4}. From recall 3/4 down, points every
    # 0.05 fill the gaps at the best precision of the higher recalls, then trapezoids:
    #   AP  = 0.20 * 0.75 + 0.05 * (0.75 + 1) / 2 + 0.5 * 1                      = 0.69375
    # Heading precision per recall: {0: 1, 1/4: 1, 1/2: max(0.75, 0.5) = 0.75, 3/4: 0.375}:
    #   APH = 0.20 * 0.375 + 0.05 * (0.375 + 0.75) / 2 + 0.20 * 0.75
    #         + 0.05 * (0.75 + 1) / 2 + 0.25 * 1                                  = 0.546875
    cfg = EvalConfig(ap_integration="score_cutoffs")
    res = _run(_four_vehicles(), cfg).get("vehicle")
    assert res.ap == pytest.approx(0.69375, abs=1e-6)
    assert res.aph == pytest.approx(0.546875, abs=1e-6)
    assert res.curve.recall.size == 101 and res.curve.precision[-1] == 1.0  # cutoff 1.0: nothing, precision 1


def test_cutoff_integration_fills_gaps_every_recall_delta():
    # One point: recall 1 at precision 0.5. Best precision per recall {0: 1, 1: 0.5}; from recall 1
    # down, points at 0.95 ... 0.05 keep 0.5; the recall-0 point takes its neighbour's 0.5: AP 0.5.
    curve = PRCurve(np.array([1.0]), np.array([0.5]), np.array([0.25]), np.array([0.0]))
    assert cutoff_average_precision(curve, 1) == pytest.approx(0.5, abs=1e-6)
    assert cutoff_average_precision(curve, 1, heading=True) == pytest.approx(0.25, abs=1e-6)
    # With recall_delta 1 nothing is added: one trapezoid from (1, 0.5) to (0, 0.5).
    assert cutoff_average_precision(curve, 1, recall_delta=1.0) == pytest.approx(0.5, abs=1e-6)
    # Recall 0.5 at precision 1, then 1 at 0.5: a gap of 0.5 filled at 0.5 down to 0.55, then a
    # trapezoid to (0.5, 1): 0.45 * 0.5 + 0.05 * 0.75 + 0.5 * 1 = 0.7625.
    curve = PRCurve(np.array([0.5, 1.0]), np.array([1.0, 0.5]), np.array([1.0, 0.5]), np.zeros(2))
    assert cutoff_average_precision(curve, 2) == pytest.approx(0.7625, abs=1e-6)
    assert math.isnan(cutoff_average_precision(curve, 0))


def _crowd():
    # Two people 0.12 m apart (A at 20.00, B at 20.12; 0.8 m squares, 1.8 m tall). Predictions:
    #   P (0.8) at 20.10, a quarter turn: IoU with A 0.7/0.9 = 0.778, with B 0.78/0.82 = 0.951
    #   Q (0.5) at 20.35:                 IoU with B 0.57/1.03 = 0.553, with A 0.45/1.15 = 0.391
    gt = Boxes(np.array([_square(20, side=0.8), _square(20.12, side=0.8)]), ("pedestrian",) * 2,
               num_points=np.full(2, 50))
    pred = Detections(np.array([_square(20.1, side=0.8, heading=math.pi / 2), _square(20.35, side=0.8)]),
                      np.array([0.8, 0.5]), ("pedestrian",) * 2)
    return [(pred, gt)]


def test_hungarian_and_score_first_differ_on_a_crowd():
    # Score-first: P takes B (its best), Q finds B taken and A below 0.5: TP 1, FP 1, A missed.
    first = _run(_crowd(), EvalConfig(recall_points=0)).get("pedestrian")
    assert (first.num_tp, first.num_pred, first.num_gt) == (1, 2, 2)
    assert first.ap == pytest.approx(0.5) and first.aph == pytest.approx(0.25)  # P's h = 0.5 at recall 1/2
    # Hungarian, anew at each threshold: at 0.8 only P, which takes B (h 0.5); at 0.5 P -> A and
    # Q -> B sum to 0.778 + 0.553 > 0.951: TP 2, FP 0, H = 0.5 + 1.
    # Points (recall, precision, heading precision): (1/2, 1, 0.5), (1, 1, 0.75).
    hung = _run(_crowd(), EvalConfig(matching="hungarian", recall_points=0)).get("pedestrian")
    np.testing.assert_allclose(hung.curve.recall, [0.5, 1.0])
    np.testing.assert_allclose(hung.curve.heading_precision, [0.5, 0.75])
    assert (hung.num_tp, hung.num_pred) == (2, 2)
    assert hung.ap == pytest.approx(1.0) and hung.aph == pytest.approx(0.75)


def test_hungarian_match_maximizes_summed_weight():
    w = np.array([[0.78, 0.95], [0.0, 0.55]])
    assert hungarian_match(w).tolist() == [0, 1]
    assert hungarian_match(w[:1]).tolist() == [1]
    assert hungarian_match(np.zeros((2, 3))).tolist() == [-1, -1]  # weight 0: never matched
    assert hungarian_match(np.zeros((0, 2))).tolist() == []


def test_matchers_agree_when_no_prediction_has_two_candidates():
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(5):
        centres = rng.permutation(np.arange(-60, 60, 8.0))[:8]
        gt = Boxes(np.array([_square(x, y=float(x % 3)) for x in centres]), ("vehicle",) * 8,
                   num_points=rng.integers(0, 40, 8))
        boxes = gt.boxes + np.c_[rng.normal(0, 0.15, (8, 2)), np.zeros((8, 4)), rng.normal(0, 0.8, 8)]
        extra = np.array([_square(float(x), 70.0) for x in rng.uniform(-50, 50, 3)])
        frames.append((Detections(np.r_[boxes, extra], rng.uniform(0, 1, 11), ("vehicle",) * 11), gt))
    for integration in ("recall_grid", "score_cutoffs"):
        a = _run(frames, EvalConfig(matching="score_first", ap_integration=integration))
        b = _run(frames, EvalConfig(matching="hungarian", ap_integration=integration))
        for key, e in a.entries.items():
            f = b.entries[key]
            assert (e.num_tp, e.num_pred, e.num_gt) == (f.num_tp, f.num_pred, f.num_gt)
            np.testing.assert_allclose([e.ap, e.aph], [f.ap, f.aph], equal_nan=True)


def test_level_2_matches_count_at_level_1_as_waymo_does():
    # A LEVEL_1 object (50 points) missed; a LEVEL_2 object (3 points) found at 0.9.
    gt = Boxes(np.array([_square(10), _square(20)]), ("vehicle",) * 2, num_points=np.array([50, 3]))
    pred = Detections(np.array([_square(20)]), np.array([0.9]), ("vehicle",))
    ignore = _run([(pred, gt)], EvalConfig(recall_points=0)).get("vehicle", level="LEVEL_1")
    assert (ignore.num_gt, ignore.num_pred, ignore.ap) == (1, 0, 0.0)  # the match is ignored
    # Waymo's op: the match is a true positive; the LEVEL_2 object would not be a false negative:
    # TP 1, FN 1 (the LEVEL_1 object): recall 1/2 at precision 1.
    cfg = EvalConfig(recall_points=0, harder_matches="true_positive")
    tp = _run([(pred, gt)], cfg).get("vehicle", level="LEVEL_1")
    assert (tp.num_gt, tp.num_pred, tp.num_tp) == (1, 1, 1)
    np.testing.assert_allclose(tp.curve.recall, [0.5])
    assert tp.ap == pytest.approx(0.5)


def test_ground_truth_without_points_ignored_dropped_or_level_2():
    # An empty box found at 0.9, a 50-point box found at 0.8.
    gt = Boxes(np.array([_square(10), _square(20)]), ("vehicle",) * 2, num_points=np.array([0, 50]))
    pred = Detections(np.array([_square(10), _square(20)]), np.array([0.9, 0.8]), ("vehicle",) * 2)
    frames = [(pred, gt)]
    ignored = _run(frames, EvalConfig(recall_points=0)).get("vehicle")
    assert (ignored.num_gt, ignored.num_pred, ignored.ap) == (1, 1, 1.0)
    # Dropped (Waymo's evaluation tool): the 0.9 prediction is a false positive: precision 1/2 at recall 1.
    dropped = _run(frames, EvalConfig(recall_points=0, empty_gt="drop")).get("vehicle")
    assert (dropped.num_gt, dropped.num_pred, dropped.num_tp) == (1, 2, 1)
    assert dropped.ap == pytest.approx(0.5)
    level2 = _run(frames, EvalConfig(recall_points=0, empty_gt="level_2"))
    assert level2.get("vehicle").num_gt == 2 and level2.ap("vehicle") == 1.0
    assert level2.get("vehicle", level="LEVEL_1").num_gt == 1


def test_three_dimensional_range_bands():
    # A sign 29.95 m ahead, 2.2 m up: BEV range 29.95 (0-30), 3D range 30.03 (30-50).
    sign = np.array([[29.95, 0.0, 2.2, 0.3, 0.7, 0.8, 0.0]])
    frames = [(Detections(sign, [0.9], ("sign",)), Boxes(sign, ("sign",), num_points=[20]))]
    bev = _run(frames, EvalConfig())
    full = _run(frames, EvalConfig(range_type="3d"))
    assert bev.get("sign", "0-30").num_gt == 1 and bev.get("sign", "30-50").num_gt == 0
    assert full.get("sign", "0-30").num_gt == 0 and full.get("sign", "30-50").num_gt == 1
    assert full.ap("sign", "30-50") == 1.0


def test_score_cutoffs_compare_scores_in_float32():
    # 0.299999999 is 0.3 in float32, so the op counts it at cutoff 0.30; the recall grid sees its score.
    gt = Boxes(np.array([_square(10)]), ("vehicle",), num_points=[50])
    pred = Detections(np.array([_square(10)]), np.array([0.299999999]), ("vehicle",))
    res = _run([(pred, gt)], EvalConfig(ap_integration="score_cutoffs")).get("vehicle")
    assert res.curve.recall[30] == 1.0 and res.curve.recall[31] == 0.0


def test_waymo_preset_round_trip_and_validation():
    cfg = EvalConfig.waymo()
    assert (cfg.matching, cfg.ap_integration, cfg.range_type, cfg.empty_gt, cfg.harder_matches) == (
        "hungarian", "score_cutoffs", "3d", "drop", "true_positive"
    )
    assert cfg.score_cutoffs[0] == 0.0 and cfg.score_cutoffs[-1] == 1.0 and len(cfg.score_cutoffs) == 101
    assert EvalConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert EvalConfig.waymo(matching="score_first").matching == "score_first"
    assert "Hungarian" in cfg.describe() and "101 score cutoffs" in cfg.describe()
    assert "score-first" in EvalConfig().describe() and "101 recalls" in EvalConfig().describe()
    # Metrics files written before `empty_gt` existed.
    old = {k: v for k, v in EvalConfig().to_dict().items() if k != "empty_gt"}
    assert EvalConfig.from_dict({**old, "ignore_empty_gt": False}).empty_gt == "level_2"
    assert EvalConfig.from_dict({**old, "ignore_empty_gt": True}).empty_gt == "ignore"
    with pytest.raises(ConfigError, match="matching"):
        EvalConfig(matching="optimal")
    with pytest.raises(ConfigError, match="score_cutoffs"):
        EvalConfig(score_cutoffs=(0.5, 0.2))
    with pytest.raises(ConfigError, match="recall_delta"):
        EvalConfig(recall_delta=0.0)


def test_results_with_cutoff_curves_survive_json(tmp_path):
    res = _run(_four_vehicles(), EvalConfig.waymo())
    back = DetectionResult.load_json(res.save_json(tmp_path / "m.json"))
    assert back.config == res.config
    assert back.ap("vehicle") == pytest.approx(res.ap("vehicle"), abs=1e-6)
    assert back.aph("vehicle") == pytest.approx(res.aph("vehicle"), abs=1e-6)
