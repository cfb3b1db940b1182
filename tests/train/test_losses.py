"""Loss functions of (outputs, batch): named terms, label-free use, stop-gradient, learning on one batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from drivetl.models import instantiate
from drivetl.train.losses import (
    alignment_loss,
    detection_loss,
    detection_targets,
    focal_heatmap_loss,
    masked_occupancy_loss,
    total_loss,
)

ALL = {"detection": 1.0, "occupancy": 0.5, "alignment": 0.5}


def _model(spec):
    torch.manual_seed(0)
    return instantiate(spec)


def test_named_terms_and_weights(detector_spec, batch_factory) -> None:
    model, batch = _model(detector_spec), batch_factory()
    out = model(batch, mask_ratio=0.3)
    total, terms = total_loss(out, batch, ALL)
    assert set(terms) == {
        "det/heatmap",
        "det/regression",
        "occ/occupied",
        "occ/count",
        "occ/height",
        "align/cosine",
    }
    expect = (
        terms["det/heatmap"]
        + terms["det/regression"]
        + 0.5 * (terms["occ/occupied"] + terms["occ/count"] + terms["occ/height"])
        + 0.5 * terms["align/cosine"]
    )
    assert torch.allclose(total, expect)
    only_occ, occ_terms = total_loss(out, batch, {"detection": 0.0, "occupancy": 1.0})
    assert set(occ_terms) == {"occ/occupied", "occ/count", "occ/height"}
    with pytest.raises(KeyError, match="unknown objective"):
        total_loss(out, batch, {"depth": 1.0})


def test_label_free_batch(detector_spec, batch_factory) -> None:
    model, batch = _model(detector_spec), batch_factory()
    empty = dataclasses.replace(
        batch,
        boxes=batch.boxes[:0],
        box_classes=batch.box_classes[:0],
        box_offsets=torch.zeros_like(batch.box_offsets),
    )
    out = model(empty, mask_ratio=0.3)
    det = detection_loss(out, empty)
    assert torch.isfinite(det["det/heatmap"]) and float(det["det/regression"].detach()) == 0.0
    total, _ = total_loss(out, empty, {"occupancy": 1.0, "alignment": 1.0})
    total.backward()
    assert model.lidar.pfn.layers[0]["linear"].weight.grad is not None


def test_occupancy_without_mask_is_zero(detector_spec, batch_factory) -> None:
    model, batch = _model(detector_spec), batch_factory()
    terms = masked_occupancy_loss(model(batch), batch)
    assert all(float(v.detach()) == 0.0 for v in terms.values())


def test_alignment_stops_gradient_into_lidar(detector_spec, batch_factory) -> None:
    model, batch = _model(detector_spec), batch_factory()
    out = model(batch)
    alignment_loss(out, batch)["align/cosine"].backward()
    assert model.lidar.pfn.layers[0]["linear"].weight.grad is None
    assert model.camera.backbone.stem[0].weight.grad.abs().sum() > 0


def test_focal_loss_prefers_correct_heatmaps() -> None:
    target = torch.zeros(1, 2, 8, 8)
    target[0, 1, 3, 4] = 1.0
    target[0, 1, 3, 5] = 0.6
    good = torch.logit(target.clamp(1e-3, 1 - 1e-3))
    assert float(focal_heatmap_loss(good, target)) < float(focal_heatmap_loss(torch.zeros_like(good), target))


def test_detection_loss_falls_when_fitting_one_batch(detector_spec, batch_factory) -> None:
    detector_spec["init_args"].pop("camera")
    model, batch = _model(detector_spec), batch_factory(cameras=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(batch)
        loss = sum(detection_loss(out, batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0], losses


def test_direction_classifier_term_learns_the_front(detector_spec, batch_factory) -> None:
    detector_spec["init_args"].pop("camera")
    detector_spec["init_args"].update({"size_priors": True, "direction_classifier": True})
    model, batch = _model(detector_spec), batch_factory(cameras=False)
    terms = detection_loss(model(batch), batch)
    assert set(terms) == {"det/heatmap", "det/regression", "det/direction"}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(terms["det/direction"])
    for _ in range(40):
        loss = sum(detection_loss(model(batch), batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    # from about 0.2 * ln 2 (a guess) to well below, and the logit's sign names the front of most boxes
    out = model(batch)
    assert float(detection_loss(out, batch)["det/direction"]) < 0.5 * first
    t = detection_targets(out, batch)
    b = out.regression.shape[0]
    logit = out.regression[:, 8].reshape(b, -1).gather(1, t.index)[t.mask]
    assert float(((logit > 0).float() == t.regression[..., 8][t.mask]).float().mean()) >= 0.8


def test_iou_score_and_diou_terms(detector_spec, batch_factory) -> None:
    from drivetl.models.heads import paired_iou_3d
    from drivetl.train.losses import diou_loss

    detector_spec["init_args"].pop("camera")
    detector_spec["init_args"].update({"size_priors": True, "direction_classifier": True, "iou_score": True})
    model, batch = _model(detector_spec), batch_factory(cameras=False)
    out = model(batch)
    assert out.regression.shape[1] == 10 and out.coding.iou
    terms = detection_loss(out, batch, iou_weight=1.0)
    assert {"det/iou_score", "det/iou"} <= set(terms)
    assert all(bool(torch.isfinite(v)) for v in terms.values())
    # the DIoU term reaches the regression channels that place the box
    model.zero_grad()
    terms["det/iou"].backward()
    grad = model.head.regression[-1].weight.grad
    assert float(grad[:6].abs().sum()) > 0
    # DIoU: zero for the box itself, grows with the distance, and is above 1 without overlap
    car = torch.tensor([[0.0, 0.0, 0.9, 4.0, 2.0, 1.8, 0.0]])
    shifted = [car + torch.tensor([[d, 0, 0, 0, 0, 0, 0]]) for d in (0.0, 1.0, 2.0, 6.0)]
    vals = [float(diou_loss(s, car)) for s in shifted]
    assert vals[0] == pytest.approx(0.0, abs=1e-5) and vals[0] < vals[1] < vals[2] < vals[3]
    assert vals[3] > 1.0 and float(paired_iou_3d(shifted[3], car)) == 0.0


def test_iou_score_channel_learns_the_iou_of_its_box(detector_spec, batch_factory) -> None:
    detector_spec["init_args"].pop("camera")
    detector_spec["init_args"].update({"size_priors": True, "direction_classifier": True, "iou_score": True})
    model, batch = _model(detector_spec), batch_factory(cameras=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(detection_loss(model(batch), batch)["det/iou_score"])
    for _ in range(40):
        loss = sum(detection_loss(model(batch), batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(detection_loss(model(batch), batch)["det/iou_score"]) < first
