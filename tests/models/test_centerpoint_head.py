"""Target assignment and decoding: perfect predictions decode back to the boxes they came from."""

from __future__ import annotations

import math

import pytest
import torch

from drivetl.models.heads import (
    REGRESSION,
    BEVGeometry,
    BoxCoding,
    CenterHead,
    assign_targets,
    decode,
    gaussian_radius,
    prior_sizes,
)

GEO = BEVGeometry(x_min=-16.0, y_min=-16.0, cell_x=0.5, cell_y=0.5, height=64, width=64)


def _boxes():
    boxes = torch.tensor(
        [
            [3.3, -4.1, 0.8, 4.5, 1.9, 1.6, 0.4],
            [-7.7, 6.2, 0.9, 0.8, 0.7, 1.8, -2.9],
            [10.1, 10.4, 0.85, 1.8, 0.6, 1.7, math.pi],
            [40.0, 0.0, 1.0, 4.0, 2.0, 1.5, 0.0],  # outside the map: ignored
            [-2.0, 1.0, 0.8, 4.2, 1.8, 1.5, 1.2],
        ]
    )
    return boxes, torch.tensor([0, 4, 5]), torch.tensor([0, 1, 2, 0, 0])


def test_targets_peak_at_centres_and_regress_the_box() -> None:
    boxes, offsets, classes = _boxes()
    t = assign_targets(boxes, offsets, classes, 4, GEO)
    assert t.heatmap.shape == (2, 4, 64, 64)
    assert t.mask.sum(1).tolist() == [3, 1]  # frame 0 lost the out-of-map box
    assert float(t.heatmap.max()) == 1.0 and int((t.heatmap == 1).sum()) == 4
    # frame 0, object 0: centre cell and regression targets
    ix, iy = int((3.3 + 16) / 0.5), int((-4.1 + 16) / 0.5)
    assert int(t.index[0, 0]) == iy * 64 + ix
    assert t.heatmap[0, 0, iy, ix] == 1.0
    reg = t.regression[0, 0]
    assert torch.allclose(reg[:2], torch.tensor([(3.3 + 16) / 0.5 - ix, (-4.1 + 16) / 0.5 - iy]), atol=1e-5)
    assert torch.allclose(reg[3:6].exp(), boxes[0, 3:6], atol=1e-5)
    assert torch.allclose(torch.atan2(reg[6], reg[7]), boxes[0, 6], atol=1e-5)
    assert len(REGRESSION) == 8


def test_gaussian_radius_grows_with_size() -> None:
    r = gaussian_radius(torch.tensor([2.0, 8.0, 20.0]), torch.tensor([2.0, 4.0, 8.0]))
    assert bool((r[1:] > r[:-1]).all()) and bool((r > 0).all())
    # Hand-computed, the smallest of the three cases (here always the third,
    # r3 = (b3 + sqrt(b3^2 - 4 a3 c3)) / 2 with a3 = 4o, b3 = -2o(l + w), c3 = (o - 1) l w):
    # an 8 x 4 box at o = 0.1: b3 = -2.4, b3^2 - 4 a3 c3 = 5.76 + 46.08 = 51.84 = 7.2^2 -> 2.4
    # (the other cases give 9.13 and 17.37).
    assert float(r[1]) == pytest.approx(2.4, abs=1e-5)
    # A square of side s: the discriminant is 16 o s^2, so r3 = 2 s (sqrt(o) - o).
    for side, overlap in ((2.0, 0.1), (5.0, 0.1), (3.0, 0.5)):
        got = gaussian_radius(torch.tensor([side]), torch.tensor([side]), min_overlap=overlap)
        assert float(got[0]) == pytest.approx(2 * side * (math.sqrt(overlap) - overlap), abs=1e-5)


def test_decode_inverts_perfect_predictions() -> None:
    boxes, offsets, classes = _boxes()
    t = assign_targets(boxes, offsets, classes, 4, GEO)
    logits = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
    reg = torch.zeros(2, 8, 64 * 64)
    for b in range(2):
        for k in range(int(t.mask[b].sum())):
            reg[b, :, t.index[b, k]] = t.regression[b, k]
    dets = decode(logits, reg.view(2, 8, 64, 64), GEO, score_threshold=0.5)
    assert [len(d.boxes) for d in dets] == [3, 1]
    expected = [boxes[[0, 1, 2]], boxes[[4]]]
    for det, exp, lab in zip(dets, expected, ([0, 1, 2], [0]), strict=True):
        order = det.boxes[:, 0].argsort()
        eo = exp[:, 0].argsort()
        got, want = det.boxes[order], exp[eo]
        assert torch.allclose(got[:, :6], want[:, :6], atol=1e-4)
        dh = torch.remainder(got[:, 6] - want[:, 6] + math.pi, 2 * math.pi) - math.pi
        assert float(dh.abs().max()) < 1e-4
        assert sorted(det.labels.tolist()) == sorted(lab)


def test_head_shapes_and_prior() -> None:
    head = CenterHead(16, 3, 8, prior=0.1)
    hm, reg = head(torch.randn(2, 16, 20, 24))
    assert hm.shape == (2, 3, 20, 24) and reg.shape == (2, 8, 20, 24)
    assert abs(float(head.heatmap[-1].bias.detach().sigmoid().mean()) - 0.1) < 1e-5


def test_head_hands_back_nchw_maps_from_a_channels_last_input() -> None:
    # the LiDAR encoder runs its convolutions channels-last; decoding and the losses view the
    # maps as (B, C, H * W), which needs the default layout
    head = CenterHead(16, 3, 8, prior=0.1)
    x = torch.randn(2, 16, 20, 24)
    hm, reg = head(x.contiguous(memory_format=torch.channels_last))
    assert hm.is_contiguous() and reg.is_contiguous()
    hm_ref, reg_ref = head(x)
    assert torch.allclose(hm, hm_ref, atol=1e-5) and torch.allclose(reg, reg_ref, atol=1e-5)
    assert reg.view(2, 8, -1).shape == (2, 8, 480)


def _perfect(t, channels: int) -> torch.Tensor:
    reg = torch.zeros(2, channels, 64 * 64)
    for b in range(2):
        for k in range(int(t.mask[b].sum())):
            reg[b, :, t.index[b, k]] = t.regression[b, k]
    return reg.view(2, channels, 64, 64)


@pytest.mark.parametrize("priors", [False, True])
def test_direction_and_size_prior_coding_round_trip(priors: bool) -> None:
    boxes, offsets, classes = _boxes()
    classes_k = ["vehicle", "pedestrian", "cyclist", "sign"]
    log_priors = torch.tensor(prior_sizes(classes_k, True)).log() if priors else None
    coding = BoxCoding(log_priors, direction=True)
    t = assign_targets(boxes, offsets, classes, 4, GEO, coding=coding)
    assert t.regression.shape[-1] == 9
    car = t.regression[0, 0]
    # the axis channels are sin/cos of twice the heading; the front logit target is 0 or 1
    assert torch.allclose(car[6:8], torch.tensor([math.sin(0.8), math.cos(0.8)]), atol=1e-5)
    assert float(car[8]) == 1.0  # heading 0.4: cos(0.4 - pi/4) > 0
    assert float(t.regression[0, 1, 8]) == 0.0  # heading -2.9 points the other way
    if priors:  # a car of the prior's size regresses log(4.5 / 4.7), not log(4.5)
        assert float(car[3]) == pytest.approx(math.log(4.5 / 4.7), abs=1e-5)
    logits = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
    reg = _perfect(t, 9)
    reg[:, 8] = reg[:, 8] * 20 - 10  # targets 0/1 -> confident logits
    dets = decode(logits, reg, GEO, score_threshold=0.5, coding=coding)
    got = torch.cat([d.boxes for d in dets])
    want = boxes[[0, 1, 2, 4]]
    got = got[got[:, 0].argsort()]
    want = want[want[:, 0].argsort()]
    assert torch.allclose(got[:, :6], want[:, :6], atol=1e-4)
    dh = torch.remainder(got[:, 6] - want[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert float(dh.abs().max()) < 1e-4
    # the direction logit alone turns a box around: the axis stays, the front flips
    reg[:, 8] = -reg[:, 8]
    flipped = torch.cat([d.boxes for d in decode(logits, reg, GEO, score_threshold=0.5, coding=coding)])
    flipped = flipped[flipped[:, 0].argsort()]
    dh = torch.remainder(flipped[:, 6] - want[:, 6], 2 * math.pi)
    assert torch.allclose(dh, torch.full_like(dh, math.pi), atol=1e-4)


def test_head_with_priors_predicts_class_sized_boxes_from_zero_regression() -> None:
    head = CenterHead(16, 2, 8, size_priors=prior_sizes(["vehicle", "pedestrian"], True), direction=True)
    _, reg = head(torch.randn(1, 16, 8, 8))
    assert reg.shape == (1, 9, 8, 8) and "log_priors" not in head.state_dict()
    size, _ = head.coding.decode(torch.zeros(1, 9, 2), torch.tensor([[0, 1]]))
    assert torch.allclose(size[0, :, 0], torch.tensor([4.7, 2.0, 1.7]))
    assert torch.allclose(size[0, :, 1], torch.tensor([0.7, 0.7, 1.75]))
    with pytest.raises(ValueError, match="channels"):
        decode(torch.zeros(1, 2, 8, 8), torch.zeros(1, 8, 8, 8), GEO, coding=head.coding)


def test_box_coding_survives_a_json_round_trip() -> None:
    coding = BoxCoding(torch.tensor(prior_sizes(["vehicle", "pedestrian"], True)).log(), direction=True)
    doc = coding.to_dict()
    assert doc["size_priors"] == [[4.7, 2.0, 1.7], [0.7, 0.7, 1.75]] and doc["direction"] is True
    assert doc["channels"][-1] == "front_logit" and len(doc["channels"]) == coding.channels == 9
    back = BoxCoding.from_dict(doc)
    assert back.direction and torch.allclose(back.log_priors, coding.log_priors)
    plain = BoxCoding.from_dict(None)  # metadata written before the options: sin/cos, plain sizes
    assert plain.log_priors is None and not plain.direction and plain.channels == 8


def test_iou_channel_is_last_and_rectifies_the_ranking() -> None:
    coding = BoxCoding(None, direction=True, iou=True, iou_alpha=0.5)
    assert coding.channels == 10 and coding.iou_channel == 9 and coding.names[-1] == "iou_logit"
    back = BoxCoding.from_dict(coding.to_dict())
    assert back.iou and back.iou_alpha == 0.5 and back.channels == 10
    assert not BoxCoding.from_dict({"direction": True}).iou  # files written before the option
    boxes, offsets, classes = _boxes()
    t = assign_targets(boxes, offsets, classes, 4, GEO, coding=coding)
    assert t.regression.shape[-1] == 10 and float(t.regression[..., 9].abs().sum()) == 0.0
    # two objects equally certain in the heatmap: the one whose box the head trusts more ranks first
    logits = torch.logit(t.heatmap.clamp(1e-4, 1 - 1e-4))
    reg = _perfect(t, 10)
    reg[:, 8] = reg[:, 8] * 20 - 10
    reg[:, 9] = 4.0  # IoU ~0.98 everywhere ...
    car_cell = int(t.index[0, 0])
    reg.view(2, 10, -1)[0, 9, car_cell] = -4.0  # ... but ~0.02 for the first frame's car
    dets = decode(logits, reg, GEO, score_threshold=0.0, coding=coding)
    first = dets[0]
    car = int((first.boxes[:, 0] - 3.3).abs().argmin())
    other = int((first.boxes[:, 0] + 7.7).abs().argmin())
    assert float(first.scores[car]) < 0.2 < float(first.scores[other])
    heat = float(torch.sigmoid(logits.view(2, 4, -1)[0, 0, car_cell]))
    expect = math.sqrt(heat * float(torch.sigmoid(torch.tensor(-4.0))))
    assert float(first.scores[car]) == pytest.approx(expect, rel=1e-4)
    plain = decode(logits, reg[:, :9], GEO, score_threshold=0.5, coding=BoxCoding(None, True))[0]
    assert len(plain.scores) == 3 and float(plain.scores.min()) > 0.9  # the heatmap alone ranks them
