"""The voxel grid: voxel size and point range, in the vehicle frame, metres."""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivetl.errors import ConfigError

_MAX_CELLS_PER_AXIS = 1 << 24  # float32 represents every cell index exactly below this


@dataclass(frozen=True)
class VoxelGrid:
    """A regular grid over an axis-aligned box.

    Attributes:
        voxel_size: (3,) metres, the cell edge along x, y, z. A pillar grid uses the full z extent
            as its z size (one cell in z).
        point_range: (6,) metres, ``(x_min, y_min, z_min, x_max, y_max, z_max)``. The range is
            half-open: a point is inside when ``min <= p < max`` on every axis. Each extent must be
            a whole number of voxel sizes (within 1e-4 of a cell).

    A point's cell is ``floor((p - min) / size)`` computed in float32 (subtraction, then true
    division, each rounded to nearest). Float32 rounding can put a point a hair below ``max`` into
    cell ``grid_shape``; such a point is out of the grid and dropped, identically on every backend.
    """

    voxel_size: tuple[float, float, float]
    point_range: tuple[float, float, float, float, float, float]

    def __post_init__(self) -> None:
        size = tuple(float(s) for s in self.voxel_size)
        rng = tuple(float(r) for r in self.point_range)
        if len(size) != 3 or len(rng) != 6:
            raise ConfigError(
                f"VoxelGrid: voxel_size needs 3 values and point_range 6, got {len(size)} and {len(rng)}"
            )
        object.__setattr__(self, "voxel_size", size)
        object.__setattr__(self, "point_range", rng)
        for axis, name in enumerate("xyz"):
            lo, hi, s = rng[axis], rng[axis + 3], size[axis]
            if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(s)) or s <= 0 or hi <= lo:
                raise ConfigError(
                    f"VoxelGrid: axis {name} needs a finite size > 0 and min < max; got size={s}, "
                    f"range=[{lo}, {hi})"
                )
            cells = (hi - lo) / s
            if abs(cells - round(cells)) > 1e-4 or round(cells) < 1:
                raise ConfigError(
                    f"VoxelGrid: axis {name} extent {hi - lo} m is not a whole number of {s} m voxels; "
                    f"adjust point_range or voxel_size"
                )
            if round(cells) >= _MAX_CELLS_PER_AXIS:
                raise ConfigError(f"VoxelGrid: axis {name} has {round(cells)} cells; at most 2^24 - 1")

    @property
    def range_min(self) -> tuple[float, float, float]:
        """(3,) metres, the inclusive lower corner."""
        return self.point_range[:3]  # type: ignore[return-value]

    @property
    def range_max(self) -> tuple[float, float, float]:
        """(3,) metres, the exclusive upper corner."""
        return self.point_range[3:]  # type: ignore[return-value]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Cells along (x, y, z)."""
        return tuple(  # type: ignore[return-value]
            round((self.point_range[a + 3] - self.point_range[a]) / self.voxel_size[a]) for a in range(3)
        )

    @property
    def num_cells(self) -> int:
        """Cells in the whole grid (nx * ny * nz)."""
        nx, ny, nz = self.grid_shape
        return nx * ny * nz
