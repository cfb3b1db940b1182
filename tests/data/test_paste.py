"""Object paste (ground-truth sampling): geometry helpers, the placement rules, the data modules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from drivetl.data.paste import (
    ObjectBank,
    PasteConfig,
    boxes_overlap_bev,
    paste_objects,
    points_in_box,
    rays_cross_box,
)
from drivetl.data.records import Boxes, FrameKey, Sample
from drivetl.errors import ConfigError

ORIGIN = np.array([0.0, 0.0, 1.9])
COLUMNS = ("x", "y", "z", "intensity")


def test_rays_cross_box_hides_only_points_behind_the_box() -> None:
    box = np.array([10.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.3])
    pts = np.array(
        [
            [20.0, 0.0, 0.5],  # straight behind: hidden
            [5.0, 0.0, 0.5],  # in front: seen
            [20.0, 6.0, 0.5],  # behind, beside the box's shadow: seen
            [10.0, 0.0, 1.0],  # inside the box: not hidden by it
            [20.0, 0.0, 6.0],  # behind but above the box's top as seen from the LiDAR: seen
            [-20.0, 0.0, 0.5],  # the other way: seen
        ]
    )
    assert rays_cross_box(ORIGIN, pts, box).tolist() == [True, False, False, False, False, False]


def test_bev_overlap_uses_the_rotated_rectangles() -> None:
    h = np.pi / 4
    a = np.array([0.0, 0.0, 0.0, 4.0, 1.0, 1.5, h])
    # parallel to a, 2.1 m beside it: the axis-aligned bounds overlap, the boxes do not
    beside = np.array([1.5, -1.5, 0.0, 4.0, 1.0, 1.5, h])
    crossing = np.array([1.0, -1.0, 0.0, 4.0, 1.0, 1.5, -h])
    far = np.array([9.0, 0.0, 0.0, 4.0, 1.0, 1.5, 0.0])
    got = boxes_overlap_bev(a, np.stack([beside, crossing, far, a]))
    assert got.tolist() == [False, True, False, True]
    assert boxes_overlap_bev(a, np.zeros((0, 7))).shape == (0,)


def _ground(step: float = 0.25, extent: float = 30.0) -> np.ndarray:
    g = np.arange(-extent, extent, step)
    x, y = np.meshgrid(g, g, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), np.zeros(x.size), np.full(x.size, 0.1)], 1)


def _car_points(box: np.ndarray, n: int = 200, seed: int = 0) -> np.ndarray:
    """Points on the faces of `box` (7,), intensity 0.5."""
    rng = np.random.default_rng(seed)
    local = rng.uniform(-0.5, 0.5, (n, 3)) * box[3:6]
    face = rng.integers(0, 3, n)
    local[np.arange(n), face] = np.sign(local[np.arange(n), face]) * box[3:6][face] / 2
    c, s = np.cos(box[6]), np.sin(box[6])
    x = box[0] + c * local[:, 0] - s * local[:, 1]
    y = box[1] + s * local[:, 0] + c * local[:, 1]
    return np.stack([x, y, box[2] + local[:, 2], np.full(n, 0.5)], 1)


def _sample(points: np.ndarray, boxes: list[np.ndarray], classes: tuple[str, ...]) -> Sample:
    b = Boxes(np.stack(boxes) if boxes else np.zeros((0, 7)), classes)
    return Sample(FrameKey("s", 0), points.astype(np.float32), COLUMNS, b)


def _bank(*objects: tuple[str, np.ndarray]) -> ObjectBank:
    samples = [_sample(_car_points(box, seed=i), [box], (name,)) for i, (name, box) in enumerate(objects)]
    return ObjectBank.from_samples(samples, PasteConfig(counts={"vehicle": 1, "pedestrian": 1}))


def test_paste_adds_objects_where_they_fit_and_hides_what_they_cover() -> None:
    existing = np.array([10.0, 5.0, 0.8, 4.5, 1.9, 1.6, 0.0])
    fits = np.array([12.0, -4.0, 0.8, 4.5, 1.9, 1.6, 0.2])
    overlaps = np.array([11.0, 5.5, 0.8, 4.5, 1.9, 1.6, 0.0])
    in_a_wall = np.array([-10.0, 0.0, 0.8, 4.5, 1.9, 1.6, np.pi / 2])
    wall = np.array([[-10.0, y, z, 0.3] for y in np.arange(-4, 4, 0.2) for z in np.arange(0.5, 3, 0.2)])
    scene = np.concatenate([_ground(), wall, _car_points(existing, seed=9)])
    sample = _sample(scene, [existing], ("vehicle",))
    bank = _bank(("vehicle", fits), ("vehicle", overlaps), ("vehicle", in_a_wall))
    assert bank.counts() == {"vehicle": 3, "pedestrian": 0}
    config = PasteConfig(counts={"vehicle": 4})
    out = paste_objects(sample, bank, config, np.random.default_rng(0), ORIGIN)
    # only `fits` has room: `overlaps` collides with the frame's car, `in_a_wall` with the wall
    assert out.boxes.classes == ("vehicle", "vehicle")
    np.testing.assert_allclose(out.boxes.boxes[1], fits)
    assert out.boxes.difficulty[1] == 2 and out.boxes.ids[1] == "" and np.isnan(out.boxes.speed[1]).all()
    assert out.boxes.num_points[1] == int(points_in_box(out.points, fits).sum()) >= 5
    # the pasted car's points are the bank's, every column
    assert np.isclose(out.points[points_in_box(out.points, fits), 3], 0.5).all()
    # the ground it stands on and the ground in its shadow are gone; the ground beside it is not
    ground = out.points[np.isclose(out.points[:, 3], 0.1)]  # the ground's intensity
    far = fits[:2] / np.linalg.norm(fits[:2]) * 25.0
    assert not (np.linalg.norm(ground[:, :2] - far, axis=1) < 0.2).any()
    assert (np.linalg.norm(ground[:, :2] - (far + np.array([0.0, 8.0])), axis=1) < 0.2).any()
    assert not (np.linalg.norm(ground[:, :2] - fits[:2], axis=1) < 0.5).any()
    # the scene's other points are untouched
    assert len(out.points) < len(scene) + 200
    np.testing.assert_array_equal(out.points[:10], sample.points[:10])


def test_paste_keeps_the_count_the_frame_already_has_and_is_reproducible() -> None:
    cars = [np.array([x, -6.0, 0.8, 4.5, 1.9, 1.6, 0.0]) for x in (-15.0, -5.0, 5.0, 15.0)]
    bank = _bank(
        *[("vehicle", c) for c in cars], ("pedestrian", np.array([4.0, 6.0, 0.9, 0.6, 0.6, 1.8, 0.0]))
    )
    sample = _sample(_ground(), [np.array([0.0, 12.0, 0.8, 4.5, 1.9, 1.6, 0.0])], ("vehicle",))
    config = PasteConfig(counts={"vehicle": 3, "pedestrian": 1})
    a = paste_objects(sample, bank, config, np.random.default_rng(4), ORIGIN)
    b = paste_objects(sample, bank, config, np.random.default_rng(4), ORIGIN)
    assert a.boxes.classes.count("vehicle") == 3 and a.boxes.classes.count("pedestrian") == 1
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.boxes.boxes, b.boxes.boxes)
    full = PasteConfig(counts={"vehicle": 1, "pedestrian": 0})
    assert paste_objects(sample, bank, full, np.random.default_rng(4), ORIGIN) is sample


def test_area_limits_what_is_banked_and_counted() -> None:
    near_car = np.array([6.0, -6.0, 0.8, 4.5, 1.9, 1.6, 0.0])
    far_car = np.array([40.0, -6.0, 0.8, 4.5, 1.9, 1.6, 0.0])
    config = PasteConfig(counts={"vehicle": 1}, area=(-25.6, -25.6, 25.6, 25.6))
    samples = [_sample(_car_points(b, seed=i), [b], ("vehicle",)) for i, b in enumerate((near_car, far_car))]
    bank = ObjectBank.from_samples(samples, config)
    assert bank.counts() == {"vehicle": 1}
    np.testing.assert_allclose(bank.objects["vehicle"][0].box, near_car)
    # a car beyond the area does not count: the frame still receives one
    sample = _sample(_ground(), [np.array([-40.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0])], ("vehicle",))
    out = paste_objects(sample, bank, config, np.random.default_rng(0), ORIGIN)
    assert len(out.boxes) == 2
    with pytest.raises(ConfigError, match="area"):
        PasteConfig(counts={"vehicle": 1}, area=(1.0, 0.0, -1.0, 2.0))


def test_an_object_behind_a_frame_object_loses_its_hidden_points() -> None:
    front = np.array([8.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0])
    behind = np.array([16.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0])  # in the front car's shadow, nearly all
    bank = _bank(("vehicle", behind))
    sample = _sample(_ground(), [front], ("vehicle",))
    config = PasteConfig(counts={"vehicle": 2})
    seen = ~rays_cross_box(ORIGIN, bank.objects["vehicle"][0].points, front)
    assert 5 <= seen.sum() < 0.5 * len(seen)  # the roof line shows above the front car
    out = paste_objects(sample, bank, config, np.random.default_rng(0), ORIGIN)
    assert len(out.boxes) == 2 and out.boxes.num_points[1] == seen.sum()
    kept = out.points[points_in_box(out.points, behind)]
    assert len(kept) == seen.sum() and not rays_cross_box(ORIGIN, kept, front).any()
    fewer = dataclasses.replace(config, min_points=int(seen.sum()) + 1)
    assert paste_objects(sample, bank, fewer, np.random.default_rng(0), ORIGIN) is sample


def test_paste_config_checks_its_fields() -> None:
    with pytest.raises(ConfigError, match="counts"):
        PasteConfig(counts={})
    with pytest.raises(ConfigError, match="counts"):
        PasteConfig(counts={"vehicle": -1})
    with pytest.raises(ConfigError, match="bank_frames"):
        PasteConfig(counts={"vehicle": 1}, bank_frames=0)


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory) -> Path:
    """Four simulated fleet frames (team format, two streets)."""
    pytest.importorskip("open3d")
    from drivetl.sim import SimulationPlan, simulate_dataset
    from drivetl.workflows._demo_config import fleet_rig

    rig = fleet_rig()
    lidar = dataclasses.replace(rig.lidars[0], columns=400)
    rig = dataclasses.replace(rig, lidars=(lidar,))
    out = tmp_path_factory.mktemp("fleet")
    simulate_dataset(SimulationPlan(rig, 4, out, "team", seed=3, frames_per_segment=2, shard_frames=2))
    return out


def test_data_module_pastes_into_labeled_training_frames_only(fleet_dir: Path) -> None:
    from drivetl.data.datamodule import DriveDataModule, FinetuneDataModule
    from drivetl.data.sampling import SampleIndex

    paste = {"counts": {"vehicle": 40, "pedestrian": 20}, "bank_frames": 4, "min_points": 3}
    classes = ["vehicle", "pedestrian"]
    plain = DriveDataModule(root=str(fleet_dir), format="team", classes=classes, val_fraction=0.25)
    pasted = DriveDataModule(
        root=str(fleet_dir), format="team", classes=classes, val_fraction=0.25, paste=paste
    )
    plain.setup()
    pasted.setup()
    a, b = plain.train_set[SampleIndex(0, 0)], pasted.train_set[SampleIndex(0, 0)]
    assert len(b.boxes) > len(a.boxes)
    assert b.boxes.classes[: len(a.boxes)] == a.boxes.classes
    np.testing.assert_array_equal(b.boxes.boxes[: len(a.boxes)], a.boxes.boxes)
    again = pasted.train_set[SampleIndex(0, 0)]
    np.testing.assert_array_equal(again.points, b.points)
    assert len(pasted.val_set[0].boxes) == len(plain.val_set[0].boxes)  # validation is never pasted
    ft = FinetuneDataModule(
        root=str(fleet_dir),
        format="team",
        classes=classes,
        train_split=None,
        val_split=None,
        val_fraction=0.25,
        labeled_fraction=0.34,
        paste=paste,
        unlabeled=True,
    )
    ft.setup()
    # labeled frames get pasted objects; unlabeled ones (self-training) get no pasted labels
    assert ft._sets["labeled"].paste is not None and ft._sets["unlabeled"].paste is None
    assert len(ft._sets["unlabeled"][SampleIndex(0, 0)].boxes) == 0
    with pytest.raises(ConfigError, match="cyclist"):
        DriveDataModule(
            root=str(fleet_dir), format="team", classes=classes, paste={"counts": {"cyclist": 3}}
        ).setup()
    # a camera model: the pasted points would have no pixels in the images
    with pytest.raises(ConfigError, match="no pixels"):
        DriveDataModule(
            root=str(fleet_dir),
            format="team",
            classes=classes,
            paste=paste,
            camera_names=["FRONT"],
            image_size=[96, 144],
        ).setup()
