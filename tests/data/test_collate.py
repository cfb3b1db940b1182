"""Collate: concatenation with offsets, camera tensors per (frame, view), missing cameras, device moves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from drivetl.data.collate import Batch, collate
from drivetl.data.synthetic import synthetic_sample
from drivetl.models.camera import project_points


def _samples():
    a = synthetic_sample(0, num_boxes=4, ground_points=500)
    b = synthetic_sample(1, num_boxes=3, ground_points=700)
    # frame b: no SIDE_LEFT image, and one box of a class the batch does not train on
    boxes = dataclasses.replace(b.boxes, classes=("vehicle", "pedestrian", "animal"))
    b = dataclasses.replace(b, images={"FRONT": b.images["FRONT"]}, boxes=boxes)
    return a, b


def test_shapes_offsets_and_classes() -> None:
    a, b = _samples()
    batch = collate([a, b], image_size=(24, 32), classes=("vehicle", "pedestrian", "cyclist"))
    assert batch.batch_size == 2 and batch.camera_names == ("FRONT", "SIDE_LEFT")
    assert batch.offsets.tolist() == [0, len(a.points), len(a.points) + len(b.points)]
    assert torch.equal(batch.frame_points(1), torch.from_numpy(b.points))
    assert batch.box_offsets.tolist() == [0, 4, 6]  # the "animal" box is dropped
    boxes1, cls1 = batch.frame_boxes(1)
    assert cls1.tolist() == [0, 1] and torch.allclose(boxes1, torch.from_numpy(b.boxes.boxes[:2]).float())
    assert batch.images.shape == (2, 2, 3, 24, 32) and batch.images.dtype == torch.float32
    assert batch.camera_valid.tolist() == [[True, True], [True, False]]
    assert float(batch.images[1, 1].abs().sum()) == 0.0
    assert float(batch.images.max()) <= 1.0
    assert batch.keys == (a.key, b.key) and batch.rig_names == ("synthetic", "synthetic")


def test_resized_intrinsics_project_to_the_same_place() -> None:
    a, _ = _samples()
    batch = collate([a], image_size=(24, 32))  # half of 48 x 64
    cam = a.cameras[0]
    pts = a.points[:, :3].astype(np.float64)
    uv_ref, _, ok_ref = cam.project(pts)
    uv, _, ok = project_points(
        torch.from_numpy(pts).float(),
        batch.camera_K[:, :1],
        batch.camera_distortion[:, :1],
        batch.camera_from_vehicle[:, :1],
        batch.image_size[:, :1],
    )
    both = ok[0, 0].numpy() & ok_ref
    assert both.sum() > 50
    assert np.abs(uv[0, 0].numpy()[both] * 2 - uv_ref[both]).max() < 0.05


def test_lidar_only_batch_and_column_selection() -> None:
    a, b = _samples()
    batch = collate([a, b], camera_names=(), columns=("x", "y", "z", "intensity"))
    assert batch.images.shape[:2] == (2, 0) and batch.points.shape[1] == 4
    with pytest.raises(ValueError, match="time"):
        collate([a], columns=("x", "y", "z", "intensity", "time"))


def test_invariants_asserted_and_device_moves() -> None:
    a, b = _samples()
    batch = collate([a, b], image_size=(24, 32))
    with pytest.raises(AssertionError, match="offsets"):
        dataclasses.replace(batch, offsets=torch.tensor([0, 5, 6]))
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.points, batch.points)
    if torch.cuda.is_available():  # pinned host memory needs an accelerator
        assert batch.pin_memory().points.is_pinned()
