"""The data module on real-format files: Waymo TFRecords read by record index, splits, batches, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivetl.data.canonicalize import canonicalize
from drivetl.data.collate import Batch
from drivetl.data.datamodule import DriveDataModule
from drivetl.data.dataset import open_source, worker_init
from drivetl.data.formats.waymo import WaymoRecordIndex, WaymoWriter
from drivetl.data.formats.waymo._synthetic import synthetic_frame
from drivetl.errors import DataError


@pytest.fixture(scope="module")
def waymo_dir(tmp_path_factory) -> Path:
    """Two TFRecord files holding 3 + 2 small seeded Waymo-like frames."""
    root = tmp_path_factory.mktemp("waymo")
    seed = 0
    for name, count in (("a.tfrecord", 3), ("b.tfrecord", 2)):
        with WaymoWriter(root / name) as w:
            for _ in range(count):
                record, ri = synthetic_frame(
                    seed, top_shape=(16, 200), side_shape=(8, 40), returns=1, timestamp_us=1_000_000 + seed
                )
                w.write(record, ri)
                seed += 1
    return root


def test_record_index_random_access(waymo_dir: Path) -> None:
    src = open_source(waymo_dir)
    assert isinstance(src, WaymoRecordIndex) and len(src) == 5
    assert src[4].key.timestamp_us == 1_000_004 and src[1].key.timestamp_us == 1_000_001
    assert set(src[0].lidars) == {"TOP", "FRONT", "SIDE_LEFT", "SIDE_RIGHT", "REAR"}


def test_splits_samples_and_batches(waymo_dir: Path) -> None:
    dm = DriveDataModule(
        root=str(waymo_dir),
        val_fraction=0.4,
        image_size=(32, 48),
        lidars=["TOP"],
        point_columns=["x", "y", "z", "intensity", "elongation"],
        augment={"flip_y": 1.0, "rotation": 0.0, "scale": [1.0, 1.0], "translation_std": [0.0, 0.0, 0.0]},
        batch_size=2,
    )
    dm.setup("fit")
    assert len(dm.train_set) == 3 and len(dm.val_set) == 2
    sample = dm.val_set[0]
    assert sample.columns == ("x", "y", "z", "intensity", "elongation")
    assert sample.points.shape[1] == 5 and len(sample.points) > 0
    assert float(sample.points[:, 3].min()) >= 0 and float(sample.points[:, 3].max()) <= 1
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and batch.batch_size == 2
    assert batch.images.shape[-2:] == (32, 48) and bool(batch.camera_valid.all())
    # The last two frames are held out for validation.
    (val,), (train,) = dm.val_set.sets, dm.train_set.sets
    source = val.source
    assert [source[i].key.timestamp_us for i in val.indices] == [1_000_003, 1_000_004]
    assert not set(val.indices) & set(train.indices)

    def canonical(index: int):
        return canonicalize(source[index], lidars=["TOP"])

    # Augmentation (a certain left/right flip) applies to training frames: x, z kept, y mirrored.
    plain = canonical(train.indices[0])
    flipped = dm.train_set[0]
    np.testing.assert_allclose(flipped.points[:, [0, 2, 3]], plain.points[:, [0, 2, 3]], atol=1e-5)
    np.testing.assert_allclose(flipped.points[:, 1], -plain.points[:, 1], atol=1e-5)
    np.testing.assert_allclose(flipped.boxes.boxes[:, 1], -plain.boxes.boxes[:, 1], atol=1e-6)
    np.testing.assert_allclose(flipped.boxes.boxes[:, 6], -plain.boxes.boxes[:, 6], atol=1e-6)
    # ... and never to validation frames: each is its canonical frame, every time it is read,
    # sample by sample and in the validation batches.
    for i, index in enumerate(val.indices):
        expected = canonical(index)
        for _ in range(2):
            got = dm.val_set[i]
            np.testing.assert_array_equal(got.points[:, :4], expected.points[:, :4])
            np.testing.assert_array_equal(got.boxes.boxes, expected.boxes.boxes)
            for name, image in expected.images.items():
                np.testing.assert_array_equal(got.images[name], image)
    val_batch = next(iter(dm.val_dataloader()))
    expected_points = np.concatenate([canonical(i).points[:, :4] for i in val.indices])
    np.testing.assert_array_equal(val_batch.points[:, :4].numpy(), expected_points)


def test_lidar_only_module(waymo_dir: Path) -> None:
    dm = DriveDataModule(root=str(waymo_dir), max_frames=2, batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.shape[1] == 0 and batch.columns == ("x", "y", "z", "intensity")


def test_bad_inputs_name_the_file(waymo_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither"):
        open_source(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    data = bytearray((waymo_dir / "b.tfrecord").read_bytes())
    data[40] ^= 0xFF  # inside the first record's payload
    (bad / "b.tfrecord").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"b\.tfrecord: record 0 at byte offset 0: data CRC"):
        open_source(bad)  # the first record is read at start-up, not in a DataLoader worker
    with pytest.raises(DataError, match="data.root"):
        DriveDataModule(root=None).setup("fit")


class _BlasThreads(torch.utils.data.Dataset):
    """Each item: the threads of numpy's BLAS pools in the process that reads it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> list[int]:
        from threadpoolctl import threadpool_info

        np.ones((64, 3)) @ np.eye(3)  # BLAS loaded and used
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def _worker_blas_threads(init) -> list[int]:
    loader = torch.utils.data.DataLoader(
        _BlasThreads(), batch_size=None, num_workers=1, worker_init_fn=init
    )
    return [n for item in loader for n in item]


def test_loader_workers_run_numpy_blas_on_one_thread(waymo_dir: Path) -> None:
    # a worker's point transforms must not spin BLAS threads on the cores the model computes on
    default = _worker_blas_threads(None)
    if not default:
        pytest.skip("numpy's BLAS exposes no thread pool here")
    if max(default) == 1:
        pytest.skip("numpy's BLAS runs one thread by default on this machine")
    assert _worker_blas_threads(worker_init) == [1] * len(default)
    # the data modules' loaders and the evaluation's use it
    dm = DriveDataModule(root=str(waymo_dir), val_fraction=0.4, batch_size=2, num_workers=1)
    dm.setup("fit")
    assert dm.train_dataloader().worker_init_fn is worker_init
    assert dm.val_dataloader().worker_init_fn is worker_init
