"""Records cross process boundaries: DataLoader worker processes pickle the samples they send."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import MappingProxyType

import numpy as np

from drivetl.calib import load_rig
from drivetl.data.records import Boxes, CameraImage, FrameKey, FrameRecord, LidarPoints, Sample
from drivetl.data.synthetic import synthetic_sample

ROOT = Path(__file__).resolve().parents[2]


def test_samples_and_frame_records_pickle_with_their_read_only_mappings() -> None:
    """Their mappings are read-only proxies, which pickle cannot handle by itself; evaluate and
    predict with --workers N used to wait forever for batches their workers could not send."""
    sample = synthetic_sample(3, extent=8.0, num_boxes=2, ground_points=200, cameras=True)
    again = pickle.loads(pickle.dumps(sample))
    assert isinstance(again, Sample) and isinstance(again.images, MappingProxyType)
    assert again.key == sample.key and again.columns == sample.columns and again.images
    np.testing.assert_array_equal(again.points, sample.points)
    np.testing.assert_array_equal(again.boxes.boxes, sample.boxes.boxes)
    for name, img in sample.images.items():
        np.testing.assert_array_equal(again.images[name], img)

    rig = load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml")
    points = np.arange(12, dtype=np.float32).reshape(3, 4)
    record = FrameRecord(
        FrameKey("seg", 7),
        rig,
        {"TOP": LidarPoints("TOP", points)},
        {"FRONT": CameraImage("FRONT", b"\xff\xd8\xff", "jpeg", "camera/FRONT/seg/7.jpg")},
        Boxes(np.ones((1, 7)), ("vehicle",)),
        np.diag([1.0, 1.0, 1.0, 1.0]),
    )
    back = pickle.loads(pickle.dumps(record))
    assert isinstance(back.lidars, MappingProxyType) and isinstance(back.cameras, MappingProxyType)
    assert back.key == record.key and back.rig.name == rig.name
    np.testing.assert_array_equal(back.lidars["TOP"].points, points)
    assert back.cameras["FRONT"].origin == "camera/FRONT/seg/7.jpg"
    assert back.boxes.classes == ("vehicle",)
