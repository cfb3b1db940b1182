"""Fine-tuning's val/ap scores the frames as `drivetl evaluate` does: inside the model's range, boxes
without points left out."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from drivetl.data.collate import collate
from drivetl.data.records import Boxes, FrameKey, Sample
from drivetl.models.heads import BEVGeometry, Detections
from drivetl.train._finetune_select import ValidationScores


def _frame() -> tuple[Sample, np.ndarray]:
    """A frame with three vehicles: one with points inside the model's +-10 m range, one in range
    that no point reaches, one at 30 m (outside the range, with points)."""
    boxes = np.array(
        [
            [5.0, 2.0, 0.8, 4.5, 2.0, 1.6, 0.3],
            [-6.0, -4.0, 0.8, 4.5, 2.0, 1.6, 0.0],
            [30.0, 0.0, 0.8, 4.5, 2.0, 1.6, 0.0],
        ]
    )
    rng = np.random.default_rng(0)
    on_car = boxes[0, :3] + rng.uniform(-0.5, 0.5, (40, 3))
    far_car = boxes[2, :3] + rng.uniform(-0.5, 0.5, (40, 3))
    ground = np.column_stack([rng.uniform(-9, 9, (200, 2)), np.full(200, -0.05)])
    xyz = np.concatenate([on_car, far_car, ground]).astype(np.float32)
    points = np.column_stack([xyz, np.zeros(len(xyz), np.float32)])
    sample = Sample(FrameKey("f", 0), points, ("x", "y", "z", "intensity"), Boxes(boxes, ("vehicle",) * 3))
    return sample, boxes


@pytest.mark.parametrize("matcher", ["iou", "distance"])
def test_val_ap_counts_only_what_the_model_can_see(matcher: str) -> None:
    sample, boxes = _frame()
    batch = collate([sample], columns=sample.columns, camera_names=(), classes=("vehicle",))
    geometry = BEVGeometry(-10.0, -10.0, 0.5, 0.5, 40, 40)
    # a detector that finds exactly the one visible car in its range (and the far one, beyond it)
    found = torch.tensor(boxes[[0, 2]], dtype=torch.float32)
    det = Detections(found, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long))
    outputs = SimpleNamespace(
        detections=lambda **_: [det], heatmap=torch.zeros(1, 1, 40, 40), geometry=geometry
    )
    scores = ValidationScores(["vehicle"], matcher=matcher)
    scores.update(outputs, batch)
    result = scores.compute()
    # the car without points and the car outside the range are not misses; the far detection is no
    # false positive
    assert result["val/ap"] == pytest.approx(1.0)
    missed = Detections(found[1:], torch.tensor([0.8]), torch.zeros(1, dtype=torch.long))
    outputs.detections = lambda **_: [missed]
    scores.reset()
    scores.update(outputs, batch)
    assert scores.compute()["val/ap"] == pytest.approx(0.0)
