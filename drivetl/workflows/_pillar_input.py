"""The pre-processing in front of an exported detector: canonical points -> point features, pillars.

Numpy only.

Version ``drivetl.pillars/2`` (written into the ONNX file's metadata as ``preprocess``). For one frame:

1. points: (N, C) float32 in the canonical vehicle frame (x forward, y left, z up, metres, ground at
   z = 0; `drivetl.data.canonicalize`), columns as the metadata's ``columns`` (x, y, z, intensity
   first, intensity in [0, 1]);
2. a point is inside the grid when ``min <= p < max`` on x, y and z (``point_range``); its cell is
   ``floor((p - min) / voxel_size)`` computed in float32 (subtract, then divide), and a point whose
   cell rounds to the grid size is outside too (as `drivetl.ops.VoxelGrid` defines it); points
   outside are dropped, the others keep their input order;
3. pillars are the occupied (iy, ix) cells, in ascending ``iy * nx + ix`` order: ``coords`` (P, 2)
   int64; ``pillar_index`` (N_in,) int64 is each kept point's pillar (a row of ``coords``);
4. ``features`` (N_in, F) float32, per kept point: x, y, z, intensity, [elongation when
   ``use_elongation``; zeros when the data has none], the point minus the mean of its pillar's points
   (3), the point's x, y minus the pillar's centre ``(min + (i + 0.5) * voxel_size)`` (2).

No point is dropped from an occupied pillar and nothing is padded: the graph takes the max over each
pillar's points with a scatter-max (ONNX ``ScatterElements``, ``reduction="max"``, opset 18), so its
memory grows with the points, not with pillars x the largest pillar. (Version ``drivetl.pillars/1``
padded every pillar to the frame's largest one; those files must be exported again.)

The torch model computes exactly these features inside its pillar net (`drivetl.models.lidar`,
dynamic pillars without a points-per-pillar cap), so the exported graph and the torch detector see
the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PREPROCESS = "drivetl.pillars/2"
#: the graph's input names, in order
INPUTS = ("features", "pillar_index", "coords")

__all__ = ["INPUTS", "PREPROCESS", "PillarInput", "PillarSpec", "make_pillars"]


@dataclass(frozen=True)
class PillarSpec:
    """The grid and columns of the pre-processing: voxel_size (3,) and point_range (6,) metres."""

    voxel_size: tuple[float, float, float]
    point_range: tuple[float, float, float, float, float, float]
    columns: tuple[str, ...]
    use_elongation: bool

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(nx, ny) pillars."""
        nx = round((self.point_range[3] - self.point_range[0]) / self.voxel_size[0])
        ny = round((self.point_range[4] - self.point_range[1]) / self.voxel_size[1])
        return int(nx), int(ny)

    @property
    def feature_count(self) -> int:
        """F, the features per point: 4 (+1 elongation) + 3 + 2."""
        return 9 + int(self.use_elongation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the ONNX metadata's ``grid`` and ``columns``)."""
        return {
            "voxel_size": list(self.voxel_size),
            "point_range": list(self.point_range),
            "columns": list(self.columns),
            "use_elongation": self.use_elongation,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> PillarSpec:
        """Inverse of `to_dict`."""
        return PillarSpec(
            tuple(float(v) for v in d["voxel_size"]),  # type: ignore[arg-type]
            tuple(float(v) for v in d["point_range"]),  # type: ignore[arg-type]
            tuple(str(c) for c in d["columns"]),
            bool(d["use_elongation"]),
        )


@dataclass(frozen=True)
class PillarInput:
    """The graph's inputs for one frame (module docstring): features (N_in, F) float32, pillar_index
    (N_in,) int64 into coords, coords (P, 2) int64 ``(iy, ix)``."""

    features: np.ndarray
    pillar_index: np.ndarray
    coords: np.ndarray

    def feeds(self) -> dict[str, np.ndarray]:
        """The onnxruntime input feed."""
        return {"features": self.features, "pillar_index": self.pillar_index, "coords": self.coords}

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The inputs in the graph's order (`INPUTS`)."""
        return self.features, self.pillar_index, self.coords


def make_pillars(points: np.ndarray, columns: Sequence[str], spec: PillarSpec) -> PillarInput:
    """Pre-process one frame's canonical points (N, C) float32 with `columns` (see the module docstring)."""
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ValueError(f"points must be (N, C >= 4) with x, y, z, intensity first, got {pts.shape}")
    lo = np.asarray(spec.point_range[:3], np.float32)
    hi = np.asarray(spec.point_range[3:], np.float32)
    size = np.asarray(spec.voxel_size, np.float32)
    nx, ny = spec.grid_shape
    xyz = pts[:, :3]
    cell = np.floor((xyz - lo) / size)
    inside = (xyz >= lo).all(1) & (xyz < hi).all(1)
    inside &= (cell[:, 0] < nx) & (cell[:, 1] < ny) & (cell[:, 2] < 1)
    pts, cell = pts[inside], cell[inside].astype(np.int64)
    flat = cell[:, 1] * nx + cell[:, 0]
    uniq, pidx, counts = np.unique(flat, return_inverse=True, return_counts=True)
    pidx = pidx.reshape(-1).astype(np.int64)
    xyz = pts[:, :3]
    feats = [xyz, pts[:, 3:4]]
    if spec.use_elongation:
        if "elongation" in columns:
            feats.append(pts[:, list(columns).index("elongation")][:, None])
        else:
            feats.append(np.zeros((len(pts), 1), np.float32))
    total = np.zeros((len(uniq), 3), np.float32)
    np.add.at(total, pidx, xyz)
    mean = total / counts[:, None].astype(np.float32)
    feats.append(xyz - mean[pidx])
    coords = np.stack([uniq // nx, uniq % nx], 1).astype(np.int64).reshape(-1, 2)
    cx = (coords[pidx, 1].astype(np.float32) + np.float32(0.5)) * np.float32(spec.voxel_size[0]) + np.float32(
        spec.point_range[0]
    )
    cy = (coords[pidx, 0].astype(np.float32) + np.float32(0.5)) * np.float32(spec.voxel_size[1]) + np.float32(
        spec.point_range[1]
    )
    feats.append(np.stack([xyz[:, 0] - cx, xyz[:, 1] - cy], 1).reshape(-1, 2))
    features = np.ascontiguousarray(np.concatenate(feats, 1), dtype=np.float32)
    return PillarInput(features, pidx, coords)
