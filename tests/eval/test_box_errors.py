"""Box-error metrics: hand-computed translation, scale and orientation errors of matched boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivetl.data.records import Boxes
from drivetl.eval import (
    BoxErrorAccumulator,
    Detections,
    aligned_scale_error,
    box_error_table,
    heading_error_histogram,
    match_by_distance,
    orientation_error,
)

CAR = [10.0, 5.0, 0.9, 4.0, 2.0, 1.5, 0.0]
PERSON = [-3.0, 2.0, 0.9, 0.6, 0.6, 1.8, 1.0]


def test_orientation_error_is_the_smallest_yaw_difference() -> None:
    got = orientation_error(np.array([0.1, 3.0, -3.0, math.pi, 0.5]), np.array([-0.1, -3.0, 3.0, 0.0, 0.5]))
    # across the +-pi seam the difference is 2 pi - 6 = 0.283, not 6
    np.testing.assert_allclose(got, [0.2, 2 * math.pi - 6.0, 2 * math.pi - 6.0, math.pi, 0.0], atol=1e-12)
    # modulo pi, a turned-around box has no error
    assert orientation_error(math.pi + 0.1, 0.0, period=math.pi) == pytest.approx(0.1)


def test_scale_error_ignores_position_and_heading() -> None:
    gt = np.array([CAR])
    same_size = np.array([[50.0, -7.0, 3.0, 4.0, 2.0, 1.5, 2.0]])
    assert aligned_scale_error(same_size, gt)[0] == pytest.approx(0.0)
    # 4 x 2 x 1.5 against 2 x 2 x 1.5: intersection 6, union 12 + 6 - 6 = 12 -> IoU 0.5
    half = np.array([[10.0, 5.0, 0.9, 2.0, 2.0, 1.5, 0.0]])
    assert aligned_scale_error(half, gt)[0] == pytest.approx(0.5)


def test_matching_takes_the_best_scored_prediction_within_the_distance() -> None:
    gt = np.array([CAR, PERSON])
    pred = np.array(
        [
            [10.5, 5.0, 0.9, 4.0, 2.0, 1.5, 0.0],  # 0.5 m from the car, low score
            [10.2, 5.0, 0.9, 4.0, 2.0, 1.5, 0.0],  # 0.2 m from the car, high score
            [0.0, 0.0, 0.9, 4.0, 2.0, 1.5, 0.0],  # 3.6 m from the person: too far
        ]
    )
    pi, gi = match_by_distance(pred, np.array([0.3, 0.9, 0.8]), gt, threshold=2.0)
    assert pi.tolist() == [1] and gi.tolist() == [0]


def test_accumulator_reports_each_error_apart() -> None:
    gt = Boxes(
        np.array([CAR, PERSON, [0.0, -8.0, 0.9, 4.0, 2.0, 1.5, 0.0]]),
        ("vehicle", "pedestrian", "vehicle"),
        num_points=np.array([50, 20, 0]),
    )
    pred = Detections(
        np.array(
            [
                [10.3, 5.4, 1.1, 4.0, 2.0, 1.5, math.pi],  # the car turned around, 0.5 m off, 0.2 m high
                [-3.0, 2.0, 0.9, 0.6, 0.6, 1.8, 1.3],  # the person, 0.3 rad off
                [0.0, -8.0, 0.9, 4.0, 2.0, 1.5, 0.0],  # on a car without points: not counted
            ]
        ),
        np.array([0.9, 0.8, 0.7]),
        ("vehicle", "pedestrian", "vehicle"),
    )
    acc = BoxErrorAccumulator(["vehicle", "pedestrian"], distance=2.0)
    acc.update(pred, gt)
    errs = acc.compute()
    car, person = errs["vehicle"], errs["pedestrian"]
    assert (car.num_gt, car.num_pred, car.num_matched) == (1, 2, 1)
    assert car.translation_bev[0] == pytest.approx(0.5)
    assert car.translation_z[0] == pytest.approx(0.2)
    assert car.scale[0] == pytest.approx(0.0)
    assert car.orientation[0] == pytest.approx(math.pi)
    assert car.axis_error[0] == pytest.approx(0.0) and car.flip_share == 1.0
    assert person.orientation[0] == pytest.approx(0.3) and person.flip_share == 0.0
    # a 0.6 x 0.6 box turned by 0.3 rad about its centre: the IoU of two squares, below 1
    assert 0.7 < person.iou_3d[0] < 1.0 and car.iou_3d[0] < 0.8
    summary = person.summary()
    assert summary["orientation_median"] == pytest.approx(0.3) and summary["num_matched"] == 1
    table = box_error_table({"model": errs})
    row = "| model | vehicle | 1 / 1 | 0.50 (0.50) | 0.20 (0.20) | 0.00 (0.00) | 3.14 (3.14) | 100% |"
    assert row in table
    empty = BoxErrorAccumulator(["vehicle"]).compute()["vehicle"]
    assert empty.num_matched == 0 and math.isnan(empty.summary()["orientation_median"])
    assert empty.to_dict()["orientation_median"] is None


def test_heading_histogram_bins_errors_over_zero_to_pi() -> None:
    counts, edges = heading_error_histogram(np.array([0.0, 0.1, 1.6, math.pi]), bins=4)
    assert counts.tolist() == [2, 0, 1, 1] and edges[0] == 0.0 and edges[-1] == pytest.approx(math.pi)


def test_true_positive_errors_by_hand() -> None:
    from drivetl.eval import TruePositiveErrors

    gt = np.array([[10.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0], [30.0, 5.0, 1.0, 4.0, 2.0, 1.5, 0.0]])
    pred = np.array([
        [10.3, 0.0, 1.0, 4.4, 2.0, 1.5, 0.1],  # matches gt 0: 0.3 m, length +10 %, 0.1 rad
        [30.0, 5.0, 1.0, 4.0, 2.0, 1.5, np.pi],  # matches gt 1 exactly, flipped: 180 degrees
        [60.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0],  # a false positive: no error counted
    ])
    acc = TruePositiveErrors()
    acc.update(pred, np.array([0.9, 0.8, 0.7]), gt, "3d", 0.5)
    out = acc.compute()
    assert out["matched"] == 2
    assert out["centre_m"] == pytest.approx(0.15)
    assert out["size_pct"] == pytest.approx((10.0 / 3 + 0.0) / 2)
    assert out["heading_deg"] == pytest.approx((np.degrees(0.1) + 180.0) / 2)
    empty = TruePositiveErrors().compute()
    assert empty["matched"] == 0 and np.isnan(empty["centre_m"])
