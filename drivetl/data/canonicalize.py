"""Canonicalization: one rig-driven step from a recorded `FrameRecord` to a training `Sample`.

Applied the same way to Waymo-format and fleet data:
1. LiDAR points into the vehicle frame (points stored in the sensor frame go through the rig's
   `vehicle_from_lidar`);
2. optional beam re-sampling of a denser LiDAR to a target rig's beam pattern (per-point
   inclination in the source sensor frame: a point is kept when its source beam is the one nearest
   to some target beam, within half the source's beam spacing);
3. raw intensity to [0, 1] by the rig's `IntensityEncoding`;
4. optional SN-style object-size shift (Wang et al., "Train in Germany, Test in the USA", 2020):
   each box of a class grows by the target-minus-source mean size, and the points inside it are
   scaled with it (bottom face kept on the ground);
5. the ground under the vehicle moved to z = 0 (the rig's `ground`, or a RANSAC plane fit when the
   rig says `estimate`); boxes and camera extrinsics move with the points;
6. camera images decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from drivetl.calib.beams import beam_spacing, estimate_beams, nearest_beam, point_inclinations
from drivetl.calib.rig_vector import rig_vector
from drivetl.data.records import POINT_COLUMNS, Boxes, FrameRecord, Sample
from drivetl.errors import DataError, RigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundFit:
    """A fitted ground plane `normal . p + offset = 0` (vehicle frame, metres).

    height: z of the plane under the vehicle origin (x = y = 0). inliers: points within the threshold.
    """

    normal: np.ndarray
    offset: float
    height: float
    inliers: int
    tilt_deg: float


def estimate_ground(
    points: np.ndarray,
    *,
    threshold: float = 0.1,
    iterations: int = 200,
    max_tilt_deg: float = 15.0,
    radius: float = 40.0,
    seed: int = 0,
) -> GroundFit:
    """RANSAC fit of the ground plane to (N, >=3) vehicle-frame points (metres).

    Only planes within `max_tilt_deg` of horizontal are candidates; among those with about the best
    support, the lowest one wins (walls and car roofs are not the ground). The winner is refined by
    least squares on its inliers. Raises DataError when no plane has support.
    """
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    xyz = xyz[np.hypot(xyz[:, 0], xyz[:, 1]) < radius]
    if len(xyz) < 3:
        raise DataError(f"ground estimation needs points within {radius} m of the vehicle, got {len(xyz)}")
    rng = np.random.default_rng(seed)
    if len(xyz) > 30000:
        xyz = xyz[rng.choice(len(xyz), 30000, replace=False)]
    cos_max = np.cos(np.radians(max_tilt_deg))
    best: list[tuple[int, float, np.ndarray, float]] = []
    for _ in range(iterations):
        a, b, c = xyz[rng.choice(len(xyz), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-9:
            continue
        n = n / norm
        if n[2] < 0:
            n = -n
        if n[2] < cos_max:
            continue
        d = -float(n @ a)
        count = int((np.abs(xyz @ n + d) < threshold).sum())
        best.append((count, -d / n[2], n, d))
    if not best:
        raise DataError("ground estimation found no near-horizontal plane; set `ground:` in rig.yaml")
    top = max(b[0] for b in best)
    good = [b for b in best if b[0] >= 0.8 * top]
    count, _, n, d = min(good, key=lambda b: b[1])
    inl = xyz[np.abs(xyz @ n + d) < threshold]
    # Least-squares refinement: z = a x + b y + c on the inliers.
    A = np.c_[inl[:, 0], inl[:, 1], np.ones(len(inl))]
    coef, *_ = np.linalg.lstsq(A, inl[:, 2], rcond=None)
    normal = np.array([-coef[0], -coef[1], 1.0])
    normal /= np.linalg.norm(normal)
    offset = -float(coef[2]) * normal[2]
    tilt = float(np.degrees(np.arccos(normal[2])))
    return GroundFit(normal, offset, float(coef[2]), int(len(inl)), tilt)


def _target_inclinations(target_beams) -> np.ndarray:
    inc = getattr(target_beams, "inclinations", target_beams)
    return np.sort(np.asarray(inc, dtype=np.float64).reshape(-1))


def beam_resample_mask(
    points_sensor: np.ndarray, source_inclinations: np.ndarray | None, target_inclinations: np.ndarray
) -> np.ndarray:
    """(N,) bool: which points to keep so that a denser LiDAR looks like the target's beam pattern.

    points_sensor: (N, >=3) in the source LiDAR frame. source_inclinations: (H_s,) radians ascending
    (estimated from the points when None). target_inclinations: (H_t,) radians.
    """
    inc = point_inclinations(points_sensor)
    if source_inclinations is None or len(source_inclinations) == 0:
        source_inclinations = estimate_beams([points_sensor]).inclinations
    src = np.sort(np.asarray(source_inclinations, dtype=np.float64))
    tgt = _target_inclinations(target_inclinations)
    src_idx, _ = nearest_beam(inc, src)
    pick, dist = nearest_beam(tgt, src)
    half = 0.5 * beam_spacing(src)
    selected = np.unique(pick[dist <= half[pick]])
    keep_beam = np.zeros(src.size, bool)
    keep_beam[selected] = True
    return keep_beam[src_idx]


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M, N) bool: point n lies inside box m. points (N, >=3) and boxes (M, 7), same frame."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    out = np.zeros((len(b), len(xyz)), bool)
    for i, (x, y, z, length, w, h, hd) in enumerate(b):
        d = xyz - (x, y, z)
        c, s = np.cos(hd), np.sin(hd)
        lx = d[:, 0] * c + d[:, 1] * s
        ly = -d[:, 0] * s + d[:, 1] * c
        out[i] = (np.abs(lx) <= length / 2) & (np.abs(ly) <= w / 2) & (np.abs(d[:, 2]) <= h / 2)
    return out


def apply_size_shift(
    points: np.ndarray, boxes: Boxes, shift: Mapping[str, Sequence[float]]
) -> tuple[np.ndarray, Boxes]:
    """SN-style size shift: grow each box by `shift[class]` = (dl, dw, dh) metres and scale its points.

    points: (N, C) vehicle frame (only x, y, z change). Sizes never drop below 5 cm; the box's bottom
    face stays where it was. Returns new (points, boxes).
    """
    pts = np.array(points, dtype=np.float32, copy=True)
    out = boxes.boxes.copy()
    inside = points_in_boxes(pts, out)
    for i in range(len(boxes)):
        delta = shift.get(boxes.classes[i])
        if delta is None:
            continue
        x, y, z, length, w, h, hd = out[i]
        new = np.maximum(np.array([length, w, h]) + np.asarray(delta, dtype=np.float64), 0.05)
        ratio = new / np.array([length, w, h])
        bottom = z - h / 2
        sel = inside[i]
        if sel.any():
            d = pts[sel, :3].astype(np.float64) - (x, y, bottom)
            c, s = np.cos(hd), np.sin(hd)
            lx = (d[:, 0] * c + d[:, 1] * s) * ratio[0]
            ly = (-d[:, 0] * s + d[:, 1] * c) * ratio[1]
            lz = d[:, 2] * ratio[2]
            pts[sel, 0] = x + lx * c - ly * s
            pts[sel, 1] = y + lx * s + ly * c
            pts[sel, 2] = bottom + lz
        out[i, 3:6] = new
        out[i, 2] = bottom + new[2] / 2
    shifted = Boxes(out, boxes.classes, boxes.ids, boxes.num_points, boxes.difficulty, boxes.speed)
    return pts, shifted


def size_statistics(records: Iterable[FrameRecord]) -> dict[str, dict[str, np.ndarray | int]]:
    """Per class: count and mean / std of (length, width, height) in metres over all records' boxes."""
    sizes: dict[str, list[np.ndarray]] = {}
    for rec in records:
        for cls, box in zip(rec.boxes.classes, rec.boxes.boxes, strict=True):
            sizes.setdefault(cls, []).append(box[3:6])
    stats: dict[str, dict[str, np.ndarray | int]] = {}
    for cls, rows in sorted(sizes.items()):
        arr = np.asarray(rows)
        stats[cls] = {"count": len(arr), "mean": arr.mean(axis=0), "std": arr.std(axis=0)}
    return stats


def size_shift_between(source: Mapping, target: Mapping) -> dict[str, np.ndarray]:
    """Per class present in both statistics: target mean minus source mean (dl, dw, dh), metres."""
    return {c: np.asarray(target[c]["mean"]) - np.asarray(source[c]["mean"]) for c in source if c in target}


def canonicalize(
    record: FrameRecord,
    *,
    ground: float | str | None = None,
    target_beams=None,
    size_shift: Mapping[str, Sequence[float]] | None = None,
    lidars: Sequence[str] | None = None,
    decode_images: bool = True,
    report: dict | None = None,
) -> Sample:
    """Turn a recorded frame into a canonical Sample (see the module docstring for the steps).

    ground: override of the rig's ground (a z in the vehicle frame, or "estimate"); None uses the rig.
    target_beams: a LidarModel (or (H,) inclinations in radians) whose beam pattern every LiDAR
        is re-sampled to; None keeps all points.
    size_shift: class -> (dl, dw, dh) metres, e.g. from `size_shift_between`.
    lidars: which LiDARs to use (default: all in the record).
    report: when given, filled with what was done (ground source and height, points kept, ...).
    """
    rig = record.rig
    names = list(lidars) if lidars is not None else list(record.lidars)
    chunks, extra_sets = [], []
    kept_total, raw_total = 0, 0
    for name in names:
        if name not in record.lidars:
            raise DataError(
                f"frame {record.key}: no points from lidar {name!r} (has {sorted(record.lidars)})"
            )
        lp = record.lidars[name]
        model = rig.lidar(name)
        pts = lp.points.astype(np.float64)
        m = np.asarray(model.vehicle_from_lidar, dtype=np.float64)
        if lp.frame == "sensor":
            # A copy: the next line overwrites pts[:, :3], and beam re-sampling needs sensor-frame xyz.
            sensor_xyz = pts[:, :3].copy()
            pts[:, :3] = sensor_xyz @ m[:3, :3].T + m[:3, 3]
        else:
            sensor_xyz = (pts[:, :3] - m[:3, 3]) @ m[:3, :3]
        raw_total += len(pts)
        if target_beams is not None and len(pts):
            keep = beam_resample_mask(sensor_xyz, model.inclinations, _target_inclinations(target_beams))
            pts = pts[keep]
        kept_total += len(pts)
        pts[:, 3] = model.intensity.to_canonical(pts[:, 3])
        chunks.append((pts, lp.columns))
        extra_sets.append(set(lp.columns[4:]))
    extras = [c for c in POINT_COLUMNS[4:] if extra_sets and all(c in s for s in extra_sets)]
    columns = (*POINT_COLUMNS[:4], *extras)
    if chunks:
        points = np.concatenate([p[:, [cols.index(c) for c in columns]] for p, cols in chunks]).astype(
            np.float32
        )
    else:
        points = np.zeros((0, len(columns)), np.float32)
    boxes = record.boxes
    if size_shift:
        points, boxes = apply_size_shift(points, boxes, size_shift)

    g = rig.ground if ground is None else ground
    info: dict = {"lidar_points": raw_total, "kept_points": kept_total}
    if isinstance(g, str):
        if g != "estimate":
            raise RigError(f"ground must be a number or 'estimate', got {g!r}")
        fit = estimate_ground(points)
        g = fit.height
        info.update(ground_source="estimate", ground_inliers=fit.inliers, ground_tilt_deg=fit.tilt_deg)
        log.info(
            "frame %s: estimated ground z=%.3f m (tilt %.2f deg, %d inliers)",
            record.key,
            g,
            fit.tilt_deg,
            fit.inliers,
        )
    else:
        info["ground_source"] = "rig" if ground is None else "argument"
    g = float(g)
    info["ground_z"] = g
    points[:, 2] -= np.float32(g)
    if len(boxes):
        shifted = boxes.boxes.copy()
        shifted[:, 2] -= g
        boxes = Boxes(shifted, boxes.classes, boxes.ids, boxes.num_points, boxes.difficulty, boxes.speed)
    canonical_from_vehicle = np.eye(4)
    canonical_from_vehicle[2, 3] = -g
    cameras = tuple(
        cam.with_vehicle_from_camera(canonical_from_vehicle @ cam.vehicle_from_camera) for cam in rig.cameras
    )
    images = {}
    if decode_images:
        known = {cam.name for cam in rig.cameras}
        try:
            images = {name: img.decode() for name, img in record.cameras.items() if name in known}
        except DataError as exc:
            raise DataError(f"frame {record.key}: {exc}") from None
    if report is not None:
        report.update(info)
    return Sample(
        record.key, points, columns, boxes, images, cameras, getattr(rig, "name", ""), rig_vector(rig), g
    )
