"""Object paste: labeled objects of other training frames added to a frame (ground-truth sampling).

SECOND (Yan et al. 2018) and the detectors after it (PointPillars, CenterPoint) train with more
objects per frame than the recordings hold: the points inside every labeled box of the training
frames go into a bank, and each training frame receives some of them. A frame with few
pedestrians then shows the detector many, which matters most when only a handful of frames is
labeled (fine-tuning on a fleet's first labels).

An object is pasted where it was recorded (same position, heading and range in the canonical frame,
so its point density and the side the LiDAR saw are physical for that place), and only where the
scene leaves room for it. For each candidate, in a random order:

1. its box must not overlap any box of the frame or an object pasted before it (rotated BEV boxes);
2. the frame must not hold scene structure where the box stands: more than `structure_points`
   of the frame's points above the ground (z > 0.3 m, a wall, a pole, an unlabeled object) inside
   the box rejects it;
3. its own points hidden from the LiDAR by a box in front of it (a ray from the LiDAR to the point
   crosses that box) are dropped; with fewer than `min_points` left it is rejected.

Then the frame's points inside a pasted box, and the points its box hides from the LiDAR (behind it
on the ray), are removed, and the object's points and box are added (LEVEL_2 difficulty, no track
id, unknown speed). The LiDAR position is that of the frame's main LiDAR in the canonical frame.
The draws come from the caller's `numpy.random.Generator`, so a seed reproduces the frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from drivetl.data.records import Boxes, Sample
from drivetl.errors import ConfigError

__all__ = [
    "ObjectBank",
    "PasteConfig",
    "boxes_overlap_bev",
    "paste_objects",
    "points_in_box",
    "rays_cross_box",
]

#: points this far above the ground count as scene structure (the ground itself is z = 0)
_STRUCTURE_Z = 0.3


@dataclass(frozen=True)
class PasteConfig:
    """counts: class -> objects a frame should show after pasting (a frame holding that many already
    gets none of that class). bank_frames: labeled training frames the bank is read from (evenly
    spread; None: all). min_points: fewest LiDAR points of a banked (and of a pasted) object.
    structure_points: most frame points above the ground allowed inside a pasted box.
    area: (x_min, y_min, x_max, y_max) metres of the canonical frame: only objects whose centre lies
    inside are banked and counted (the detector's range; None: everywhere)."""

    counts: Mapping[str, int] = field(default_factory=dict)
    bank_frames: int | None = 60
    min_points: int = 5
    structure_points: int = 3
    area: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        counts = {str(k): int(v) for k, v in dict(self.counts).items()}
        if not counts or any(v < 0 for v in counts.values()):
            raise ConfigError(
                f"data.paste.counts must map class names to objects per frame (>= 0), got {self.counts!r}"
            )
        object.__setattr__(self, "counts", counts)
        if self.bank_frames is not None and self.bank_frames < 1:
            raise ConfigError(f"data.paste.bank_frames must be >= 1 (or null: all), got {self.bank_frames}")
        if self.min_points < 1:
            raise ConfigError(f"data.paste.min_points must be >= 1, got {self.min_points}")
        if self.area is not None:
            area = tuple(float(v) for v in self.area)
            if len(area) != 4 or not (area[0] < area[2] and area[1] < area[3]):
                raise ConfigError(
                    f"data.paste.area must be [x_min, y_min, x_max, y_max] with min < max, got {self.area}"
                )
            object.__setattr__(self, "area", area)

    def inside(self, boxes: np.ndarray) -> np.ndarray:
        """(M,) bool: boxes (M, 7) whose centre lies in `area` (all without one)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
        if self.area is None:
            return np.ones(len(boxes), bool)
        x0, y0, x1, y1 = self.area
        return (boxes[:, 0] >= x0) & (boxes[:, 0] <= x1) & (boxes[:, 1] >= y0) & (boxes[:, 1] <= y1)


def _box_frame(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N, 3) points in the frame of `box` (x along its heading, centred on it)."""
    c, s = np.cos(box[6]), np.sin(box[6])
    d = points[:, :3] - box[:3]
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)


def points_in_box(points: np.ndarray, box: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(N,) bool: points (N, >= 3) inside `box` (7,) grown by `margin` metres on every side."""
    local = _box_frame(points, box)
    half = box[3:6] / 2 + margin
    return np.all(np.abs(local) <= half, axis=1)


def rays_cross_box(origin: np.ndarray, points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) bool: the segment from `origin` (3,) to each point (N, >= 3) passes through `box` (7,)
    on its way (the slab test in the box's frame; a point inside the box is not hidden by it).
    With boxes (K, 7): (K, N), one row per box."""
    box = np.asarray(box, np.float64)
    boxes = box.reshape(-1, 7)
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]

    def local(xyz: np.ndarray) -> np.ndarray:  # (K, N, 3) in each box's frame
        d = xyz[None, :, :3] - boxes[:, None, :3]
        return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2]], -1)

    o = local(np.asarray(origin, np.float64)[None])  # (K, 1, 3)
    p = local(np.asarray(points, np.float64))
    d = p - o
    half = boxes[:, None, 3:6] / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
    # a direction component of 0 gives +-inf (the ray inside those slabs or never) or nan (on a
    # face): nan imposes nothing
    lo = np.nanmax(np.minimum(t1, t2), axis=-1, initial=-np.inf)
    hi = np.nanmin(np.maximum(t1, t2), axis=-1, initial=np.inf)
    inside = np.all(np.abs(p) <= half, axis=-1)
    out = (np.maximum(lo, 0.0) <= np.minimum(hi, 1.0)) & ~inside
    return out[0] if box.ndim == 1 else out


def _spans(boxes: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """(M, 4) per box (M, 7): azimuth of its centre seen from the LiDAR, half the azimuth span of
    its bounding circle (pi when the LiDAR stands inside it), centre distance, bounding radius (BEV)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    d = boxes[:, :2] - origin[:2]
    dist = np.hypot(d[:, 0], d[:, 1])
    reach = np.hypot(boxes[:, 3], boxes[:, 4]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.where(dist > reach, np.arcsin(np.clip(reach / dist, 0.0, 1.0)), np.pi)
    return np.stack([np.arctan2(d[:, 1], d[:, 0]), half + 1e-6, dist, reach], 1)


class _HeightGrid:
    """Counts of the frame's points above the ground in BEV cells of `cell` metres, to tell whether
    scene structure stands where a box would go (a point counts when its cell's centre lies in the
    box, so the count is exact to a cell)."""

    def __init__(self, points: np.ndarray, cell: float = 0.2):
        self.cell = cell
        above = points[points[:, 2] > _STRUCTURE_Z, :2]
        if not len(above):
            self.origin, self.shape, self.counts = np.zeros(2), (1, 1), np.zeros((1, 1), np.int64)
            return
        self.origin = np.floor(above.min(0) / cell) * cell
        ij = np.floor((above - self.origin) / cell).astype(np.int64)
        self.shape = tuple(int(v) + 1 for v in ij.max(0))
        flat = ij[:, 0] * self.shape[1] + ij[:, 1]
        self.counts = np.bincount(flat, minlength=self.shape[0] * self.shape[1]).reshape(self.shape)

    def in_box(self, box: np.ndarray) -> int:
        """Points above the ground in the cells of `box` (7,)."""
        reach = float(np.hypot(box[3], box[4])) / 2
        lo = np.floor((box[:2] - reach - self.origin) / self.cell).astype(np.int64)
        hi = np.floor((box[:2] + reach - self.origin) / self.cell).astype(np.int64)
        lo, hi = np.maximum(lo, 0), np.minimum(hi, np.array(self.shape) - 1)
        if np.any(hi < lo):
            return 0
        i = np.arange(lo[0], hi[0] + 1)
        j = np.arange(lo[1], hi[1] + 1)
        sub = self.counts[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1]
        if not sub.any():
            return 0
        x = self.origin[0] + (i + 0.5) * self.cell
        y = self.origin[1] + (j + 0.5) * self.cell
        centres = np.stack(np.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2)
        local = _box_frame(np.concatenate([centres, np.full((len(centres), 1), box[2])], 1), box)
        inside = (np.abs(local[:, 0]) <= box[3] / 2) & (np.abs(local[:, 1]) <= box[4] / 2)
        return int(sub.reshape(-1)[inside].sum())


def _may_hide(front: np.ndarray, back: np.ndarray) -> np.ndarray:
    """Broadcast bool over spans (`_spans` rows): False where no part of the box of `front` can hide
    any of `back` (azimuth spans apart, or `front` wholly farther); True leaves it to the ray test."""
    gap = np.abs((front[..., 0] - back[..., 0] + np.pi) % (2 * np.pi) - np.pi)
    return (gap <= front[..., 1] + back[..., 1]) & (
        front[..., 2] - front[..., 3] <= back[..., 2] + back[..., 3]
    )


class _Polar:
    """Points ordered by azimuth about the LiDAR (in bins of 2 pi / `BINS`), for the prefilters: a
    box can hold or hide only points within the azimuth span of its bounding circle, and hide only
    points farther than the circle's nearest point. The exact tests run on what the prefilter keeps."""

    BINS = 4096

    def __init__(self, points: np.ndarray, origin: np.ndarray):
        d = points[:, :2] - origin[:2]
        azimuth = np.arctan2(d[:, 1], d[:, 0])
        bins = np.minimum(((azimuth + np.pi) * (self.BINS / (2 * np.pi))).astype(np.int16), self.BINS - 1)
        order = np.argsort(bins, kind="stable")  # a radix sort on 16-bit keys
        self.order = order
        self.bins = bins[order]
        self.range2 = np.einsum("nd,nd->n", d, d)[order]
        self.points = points
        self.origin = origin

    def near(self, span: np.ndarray, behind: bool) -> np.ndarray:
        """Indices (into the points) within the azimuth span `span` (a `_spans` row, widened to whole
        bins) and, with `behind`, not nearer than its circle."""
        centre, half, dist, reach = (float(v) for v in span)
        if half >= np.pi:
            pos = np.arange(len(self.bins))
        else:
            scale = self.BINS / (2 * np.pi)
            lo = int(np.floor((centre - half + np.pi) * scale))
            hi = int(np.floor((centre + half + np.pi) * scale))
            cuts = []
            for a, b in ((lo, hi), (lo + self.BINS, hi + self.BINS), (lo - self.BINS, hi - self.BINS)):
                a, b = max(a, 0), min(b, self.BINS - 1)
                if b >= a:
                    i, j = np.searchsorted(self.bins, [a, b + 1])
                    if j > i:
                        cuts.append(np.arange(i, j))
            pos = np.concatenate(cuts) if cuts else np.zeros(0, np.int64)
        if behind and len(pos):
            pos = pos[self.range2[pos] >= max(dist - reach, 0.0) ** 2]
        return self.order[pos]

    def hidden_by(self, box: np.ndarray, span: np.ndarray) -> np.ndarray:
        """Indices of the points `rays_cross_box` hides behind `box`."""
        cand = self.near(span, behind=True)
        return cand[rays_cross_box(self.origin, self.points[cand], box)] if len(cand) else cand

    def inside(self, box: np.ndarray, span: np.ndarray) -> np.ndarray:
        """Indices of the points inside `box`."""
        cand = self.near(span, behind=False)
        return cand[points_in_box(self.points[cand], box)] if len(cand) else cand


def boxes_overlap_bev(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(M,) bool: the BEV rectangle of `box` (7,) overlaps that of each of `others` (M, 7)
    (separating-axis test on the four edge directions; touching counts as overlapping)."""
    others = np.asarray(others, np.float64).reshape(-1, 7)
    box = np.asarray(box, np.float64)

    def axes(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # (.., 2) length and width directions
        return np.stack([np.cos(h), np.sin(h)], -1), np.stack([-np.sin(h), np.cos(h)], -1)

    ea, fa = axes(np.full(len(others), box[6]))
    eb, fb = axes(others[:, 6])
    gap = others[:, :2] - box[:2]
    overlap = np.ones(len(others), bool)
    for u in (ea, fa, eb, fb):
        ra = box[3] / 2 * np.abs((u * ea).sum(-1)) + box[4] / 2 * np.abs((u * fa).sum(-1))
        rb = others[:, 3] / 2 * np.abs((u * eb).sum(-1)) + others[:, 4] / 2 * np.abs((u * fb).sum(-1))
        overlap &= np.abs((gap * u).sum(-1)) <= ra + rb
    return overlap


@dataclass
class _Object:
    points: np.ndarray  # (n, C) float32, canonical frame
    box: np.ndarray  # (7,) float64


class ObjectBank:
    """Labeled objects of training frames by class: each its points (the frame's points inside its
    box, every column) and its box. `columns` name the point columns."""

    def __init__(self, objects: Mapping[str, list[_Object]], columns: tuple[str, ...]):
        self.objects = {k: list(v) for k, v in objects.items()}
        self.columns = tuple(columns)
        self._spans: dict[tuple, np.ndarray] = {}

    def spans(self, name: str, origin: np.ndarray) -> np.ndarray:
        """(P, 4) `_spans` of the boxes of class `name` seen from `origin` (computed once per origin)."""
        key = (name, *np.round(origin, 6).tolist())
        if key not in self._spans:
            boxes = np.stack([o.box for o in self.objects.get(name, [])]) if self.objects.get(name) else None
            self._spans[key] = _spans(boxes, origin) if boxes is not None else np.zeros((0, 4))
        return self._spans[key]

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], config: PasteConfig) -> ObjectBank:
        """The objects of the classes of `config.counts` with at least `config.min_points` points,
        centred in `config.area`, in `samples` (canonical frames, not augmented)."""
        wanted = set(config.counts)
        min_points = config.min_points
        objects: dict[str, list[_Object]] = {c: [] for c in wanted}
        columns: tuple[str, ...] = ()
        for sample in samples:
            columns = sample.columns
            inside = config.inside(sample.boxes.boxes)
            for box, name, ok in zip(sample.boxes.boxes, sample.boxes.classes, inside, strict=True):
                if name not in wanted or not ok:
                    continue
                inside = points_in_box(sample.points, box)
                if int(inside.sum()) >= min_points:
                    objects[name].append(_Object(sample.points[inside].copy(), box.copy()))
        return cls(objects, columns)

    def __len__(self) -> int:
        return sum(len(v) for v in self.objects.values())

    def counts(self) -> dict[str, int]:
        """Objects per class."""
        return {k: len(v) for k, v in self.objects.items()}


def paste_objects(
    sample: Sample,
    bank: ObjectBank,
    config: PasteConfig,
    rng: np.random.Generator,
    lidar_origin: np.ndarray,
) -> Sample:
    """`sample` with objects of `bank` pasted (see the module docstring); `lidar_origin` (3,) the
    main LiDAR's position in the canonical frame. The sample is returned unchanged when nothing fits."""
    if bank.columns and bank.columns != sample.columns:
        raise ConfigError(
            f"object paste: the bank's point columns {bank.columns} differ from the frame's {sample.columns}"
        )
    origin = np.asarray(lidar_origin, np.float64)
    counted = config.inside(sample.boxes.boxes)
    present = [c for c, ok in zip(sample.boxes.classes, counted, strict=True) if ok]
    boxes = np.asarray(sample.boxes.boxes, np.float64).reshape(-1, 7)
    spans = _spans(boxes, origin)
    chosen: list[tuple[str, _Object, np.ndarray, np.ndarray]] = []
    scene = sample.points
    structure = _HeightGrid(scene)
    for name, target in config.counts.items():
        need = target - present.count(name)
        pool = bank.objects.get(name, [])
        if need <= 0 or not pool:
            continue
        placed = 0
        pool_spans = bank.spans(name, origin)
        for k in rng.permutation(len(pool))[: 3 * need]:
            if placed >= need:
                break
            obj = pool[int(k)]
            span = pool_spans[int(k)]
            close = np.hypot(*(boxes[:, :2] - obj.box[:2]).T) <= spans[:, 3] + span[3]
            if close.any() and boxes_overlap_bev(obj.box, boxes[close]).any():
                continue
            if structure.in_box(obj.box) > config.structure_points:
                continue
            keep = np.ones(len(obj.points), bool)
            front = _may_hide(spans, span)
            if front.any():
                keep = ~rays_cross_box(origin, obj.points, boxes[front]).any(0)
            if int(keep.sum()) < config.min_points:
                continue
            boxes = np.concatenate([boxes, obj.box[None]])
            spans = np.concatenate([spans, span[None]])
            chosen.append((name, obj, keep, span))
            placed += 1
    if not chosen:
        return sample
    # an object pasted later may hide part of one pasted earlier: every pasted box applies to all
    kept: list[tuple[str, _Object, np.ndarray, np.ndarray]] = []
    for i, (name, obj, keep, span) in enumerate(chosen):
        later = [other.box for _, other, _, other_span in chosen[i + 1 :] if _may_hide(other_span, span)]
        if later:
            keep = keep & ~rays_cross_box(origin, obj.points, np.stack(later)).any(0)
        if int(keep.sum()) >= config.min_points:
            kept.append((name, obj, obj.points[keep], span))
    if not kept:
        return sample
    polar = _Polar(scene, origin)
    drop = np.zeros(len(scene), bool)
    for _, obj, _, span in kept:
        drop[polar.inside(obj.box, span)] = True
        drop[polar.hidden_by(obj.box, span)] = True
    pasted_points = [pts for _, _, pts, _ in kept]
    points = np.concatenate([scene[~drop], *pasted_points]).astype(np.float32, copy=False)
    old = sample.boxes
    m = len(kept)
    new_boxes = Boxes(
        np.concatenate([old.boxes, np.stack([obj.box for _, obj, _, _ in kept])]),
        old.classes + tuple(name for name, _, _, _ in kept),
        old.ids + ("",) * m,
        np.concatenate([old.num_points, np.array([len(p) for p in pasted_points], np.int32)]),
        np.concatenate([old.difficulty, np.full(m, 2, np.int8)]),
        np.concatenate([old.speed, np.full((m, 2), np.nan, np.float32)]),
    )
    return dataclasses.replace(sample, points=points, boxes=new_boxes)
