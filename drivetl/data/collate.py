"""Collate canonical `Sample`s into one typed `Batch` (hop 3 of the data flow).

Ragged point clouds and box lists are concatenated with offsets (never padded). Camera images are
resized to one common size and stacked as ``[B, V, 3, H, W]`` over a fixed, ordered list of camera
names; a camera a frame lacks is a zero image with ``camera_valid[b, v] = False``. Camera
calibration travels as tensors per (frame, view), so a different rig is just different tensors.
The invariants are asserted where the batch is built (`Batch.check`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from drivetl.calib.rig_vector import RIG_VECTOR_DIM
from drivetl.data.records import CLASSES, FrameKey, Sample

__all__ = ["Batch", "collate", "resize_image"]


@dataclass(frozen=True, eq=False)
class Batch:
    """A training batch of B frames.

    points: (N_total, C) float32, canonical vehicle frame (metres), columns named by `columns`.
    offsets: (B + 1,) int64; frame b owns ``points[offsets[b]:offsets[b + 1]]``.
    boxes: (M_total, 7) float32 ``x, y, z, length, width, height, heading`` (vehicle frame, metres, rad).
    box_offsets: (B + 1,) int64; frame b owns ``boxes[box_offsets[b]:box_offsets[b + 1]]``.
    box_classes: (M_total,) int64 index into `classes`.
    images: (B, V, 3, H, W) float32 RGB in [0, 1]; zeros where ``camera_valid`` is False.
    camera_valid: (B, V) bool.
    camera_K: (B, V, 3, 3) float32 intrinsics for the (H, W) image in `images` (pixels).
    camera_distortion: (B, V, 5) float32 ``k1, k2, p1, p2, k3``.
    camera_from_vehicle: (B, V, 4, 4) float32; camera = Waymo camera frame (x fwd, y left, z up).
    image_size: (B, V, 2) int64 ``width, height`` in pixels that `camera_K` refers to.
    rig_vectors: (B, D) float32, each frame's rig vector (`drivetl.calib.rig_vector`, D =
        `RIG_VECTOR_DIM`); a model that conditions on the rig reads it here.
    keys, rig_names: one per frame. camera_names: the V view names. classes: names of box classes.
    """

    points: torch.Tensor
    offsets: torch.Tensor
    columns: tuple[str, ...]
    boxes: torch.Tensor
    box_offsets: torch.Tensor
    box_classes: torch.Tensor
    images: torch.Tensor
    camera_valid: torch.Tensor
    camera_K: torch.Tensor
    camera_distortion: torch.Tensor
    camera_from_vehicle: torch.Tensor
    image_size: torch.Tensor
    rig_vectors: torch.Tensor
    keys: tuple[FrameKey, ...]
    rig_names: tuple[str, ...]
    camera_names: tuple[str, ...]
    classes: tuple[str, ...] = CLASSES

    def __post_init__(self) -> None:
        self.check()

    @property
    def batch_size(self) -> int:
        """B, the number of frames."""
        return int(self.offsets.shape[0]) - 1

    @property
    def num_views(self) -> int:
        """V, the number of camera views."""
        return len(self.camera_names)

    def check(self) -> None:
        """Assert the shape/dtype invariants of the docstring (AssertionError naming the field)."""
        b = len(self.keys)
        v = len(self.camera_names)
        assert self.points.ndim == 2 and self.points.dtype == torch.float32, f"points {self.points.shape}"
        assert self.points.shape[1] == len(self.columns), f"points {self.points.shape} vs {self.columns}"
        for name, off, total in (
            ("offsets", self.offsets, self.points.shape[0]),
            ("box_offsets", self.box_offsets, self.boxes.shape[0]),
        ):
            assert off.dtype == torch.int64 and off.shape == (b + 1,), f"{name} {off.shape} for {b} frames"
            if off.device.type == "cpu":
                assert int(off[0]) == 0 and int(off[-1]) == total, f"{name} does not span {total} rows"
                assert bool((off[1:] >= off[:-1]).all()), f"{name} must be non-decreasing"
        assert self.boxes.ndim == 2 and self.boxes.shape[1] == 7 and self.boxes.dtype == torch.float32
        assert self.box_classes.shape == (self.boxes.shape[0],) and self.box_classes.dtype == torch.int64
        assert len(self.rig_names) == b, "one rig name per frame"
        assert self.rig_vectors.shape == (b, RIG_VECTOR_DIM) and self.rig_vectors.dtype == torch.float32
        assert self.images.ndim == 5 and self.images.shape[:3] == (b, v, 3), f"images {self.images.shape}"
        assert self.camera_valid.shape == (b, v) and self.camera_valid.dtype == torch.bool
        assert self.camera_K.shape == (b, v, 3, 3)
        assert self.camera_distortion.shape == (b, v, 5)
        assert self.camera_from_vehicle.shape == (b, v, 4, 4)
        assert self.image_size.shape == (b, v, 2) and self.image_size.dtype == torch.int64

    def frame_points(self, b: int) -> torch.Tensor:
        """(N_b, C) points of frame `b`."""
        return self.points[int(self.offsets[b]) : int(self.offsets[b + 1])]

    def frame_boxes(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """((M_b, 7) boxes, (M_b,) class indices) of frame `b`."""
        s, e = int(self.box_offsets[b]), int(self.box_offsets[b + 1])
        return self.boxes[s:e], self.box_classes[s:e]

    def _map(self, fn) -> Batch:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch with every tensor on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """The same batch with every tensor in pinned host memory (called by DataLoader(pin_memory=True))."""
        return self._map(lambda t: t.pin_memory())


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H0, W0, 3) uint8 -> (height, width, 3) uint8, bilinear."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _camera_tensors(camera, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K scaled to (width, height), distortion (5,), camera_from_vehicle (4, 4) for one camera model."""
    sx, sy = width / float(camera.width), height / float(camera.height)
    k = np.array(
        [[camera.fx * sx, 0.0, camera.cx * sx], [0.0, camera.fy * sy, camera.cy * sy], [0.0, 0.0, 1.0]]
    )
    dist = np.array([camera.k1, camera.k2, camera.p1, camera.p2, camera.k3], dtype=np.float64)
    return k, dist, np.asarray(camera.camera_from_vehicle, dtype=np.float64)


def collate(
    samples: Sequence[Sample],
    *,
    camera_names: Sequence[str] | None = None,
    image_size: tuple[int, int] | None = None,
    classes: Sequence[str] = CLASSES,
    columns: Sequence[str] | None = None,
) -> Batch:
    """Build a `Batch` from samples.

    camera_names: the views, in order; None = every camera name of the samples in first-seen order.
    image_size: (height, width) of the stacked images; None = the first image's size (all must agree).
        Use ``camera_names=()`` for a LiDAR-only batch (V = 0).
    classes: class names; a box whose class is not listed is dropped.
    columns: point columns to keep, in order; None = the first sample's columns (all must have them).
    """
    if not samples:
        raise ValueError("collate: no samples")
    cols = tuple(columns) if columns is not None else tuple(samples[0].columns)
    classes = tuple(classes)
    class_index = {c: i for i, c in enumerate(classes)}
    pts, boxes, box_cls, n_pts, n_box = [], [], [], [0], [0]
    for s in samples:
        missing = [c for c in cols if c not in s.columns]
        if missing:
            raise ValueError(f"sample {s.key}: point columns {missing} missing (has {s.columns})")
        idx = [s.columns.index(c) for c in cols]
        pts.append(s.points[:, idx])
        keep = [i for i, c in enumerate(s.boxes.classes) if c in class_index]
        boxes.append(s.boxes.boxes[keep].astype(np.float32))
        box_cls.append(np.array([class_index[s.boxes.classes[i]] for i in keep], dtype=np.int64))
        n_pts.append(n_pts[-1] + s.points.shape[0])
        n_box.append(n_box[-1] + len(keep))

    if camera_names is None:
        names: list[str] = []
        for s in samples:
            names += [c.name for c in s.cameras if c.name not in names]
        camera_names = names
    views = tuple(camera_names)
    if image_size is None:
        first = next((s.images[n] for s in samples for n in views if n in s.images), None)
        image_size = (first.shape[0], first.shape[1]) if first is not None else (8, 8)
    h, w = int(image_size[0]), int(image_size[1])
    b, v = len(samples), len(views)
    images = np.zeros((b, v, h, w, 3), np.uint8)
    valid = np.zeros((b, v), bool)
    k_all = np.tile(np.eye(3), (b, v, 1, 1))
    dist_all = np.zeros((b, v, 5))
    cfv_all = np.tile(np.eye(4), (b, v, 1, 1))
    size_all = np.tile(np.array([w, h], np.int64), (b, v, 1))
    for i, s in enumerate(samples):
        models = {c.name: c for c in s.cameras}
        for j, name in enumerate(views):
            cam = models.get(name)
            if cam is None:
                continue
            k_all[i, j], dist_all[i, j], cfv_all[i, j] = _camera_tensors(cam, w, h)
            img = s.images.get(name)
            if img is not None:
                images[i, j] = resize_image(img, w, h)
                valid[i, j] = True

    return Batch(
        points=torch.from_numpy(np.concatenate(pts, 0).astype(np.float32, copy=False)),
        offsets=torch.tensor(n_pts, dtype=torch.int64),
        columns=cols,
        boxes=torch.from_numpy(np.concatenate(boxes, 0).reshape(-1, 7)),
        box_offsets=torch.tensor(n_box, dtype=torch.int64),
        box_classes=torch.from_numpy(np.concatenate(box_cls, 0).astype(np.int64)),
        images=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3))).float().div_(255.0),
        camera_valid=torch.from_numpy(valid),
        camera_K=torch.from_numpy(k_all).float(),
        camera_distortion=torch.from_numpy(dist_all).float(),
        camera_from_vehicle=torch.from_numpy(cfv_all).float(),
        image_size=torch.from_numpy(size_all),
        rig_vectors=torch.from_numpy(
            np.stack(
                [s.rig_vector if s.rig_vector is not None else np.zeros(RIG_VECTOR_DIM) for s in samples]
            ).astype(np.float32)
        ),
        keys=tuple(s.key for s in samples),
        rig_names=tuple(s.rig_name for s in samples),
        camera_names=views,
        classes=classes,
    )
