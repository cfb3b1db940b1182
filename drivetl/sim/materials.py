"""Surface materials of simulated scenes: LiDAR reflectivity, camera colour, transmission.

Every triangle of a scene carries a material index into `MATERIALS`. LiDAR intensity is derived
from `reflectivity` (diffuse reflectance at the sensor's wavelength; > 1 for retroreflectors such as
licence plates and sign faces), the camera from `colour` (linear RGB in [0, 1]). `transmission` is
the probability that a LiDAR pulse passes through (glass, foliage): glass yields no return of its own,
foliage yields a first return and lets a second return through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MATERIALS", "Material", "material_index", "material_table"]


@dataclass(frozen=True)
class Material:
    """One surface material (see the module docstring for the fields' meaning)."""

    name: str
    reflectivity: float
    colour: tuple[float, float, float]
    transmission: float = 0.0
    vegetation: bool = False


MATERIALS: tuple[Material, ...] = (
    Material("asphalt", 0.08, (0.22, 0.22, 0.23)),
    Material("lane_white", 0.55, (0.85, 0.85, 0.82)),
    Material("lane_yellow", 0.45, (0.85, 0.68, 0.18)),
    Material("curb", 0.25, (0.62, 0.62, 0.60)),
    Material("sidewalk", 0.20, (0.55, 0.53, 0.50)),
    Material("grass", 0.35, (0.25, 0.42, 0.17), vegetation=True),
    Material("brick", 0.25, (0.55, 0.30, 0.22)),
    Material("concrete", 0.30, (0.70, 0.70, 0.68)),
    Material("plaster", 0.35, (0.86, 0.80, 0.68)),
    Material("window", 0.05, (0.28, 0.36, 0.45)),
    Material("metal", 0.30, (0.50, 0.50, 0.52)),
    Material("bark", 0.15, (0.33, 0.24, 0.15)),
    Material("foliage", 0.40, (0.18, 0.42, 0.14), transmission=0.35, vegetation=True),
    Material("sign_red", 2.5, (0.80, 0.10, 0.10)),
    Material("sign_blue", 2.5, (0.10, 0.25, 0.75)),
    Material("sign_yellow", 2.5, (0.90, 0.75, 0.10)),
    Material("tyre", 0.03, (0.05, 0.05, 0.05)),
    Material("car_glass", 0.06, (0.12, 0.15, 0.19), transmission=0.6),
    Material("reflector", 3.0, (0.92, 0.92, 0.90)),
    Material("skin", 0.30, (0.80, 0.60, 0.48)),
    Material("cloth_dark", 0.12, (0.16, 0.17, 0.24)),
    Material("cloth_light", 0.35, (0.70, 0.32, 0.28)),
    Material("cloth_blue", 0.25, (0.25, 0.35, 0.60)),
    Material("paint_white", 0.50, (0.88, 0.88, 0.88)),
    Material("paint_black", 0.06, (0.06, 0.06, 0.07)),
    Material("paint_silver", 0.40, (0.62, 0.63, 0.65)),
    Material("paint_red", 0.30, (0.62, 0.08, 0.08)),
    Material("paint_blue", 0.25, (0.12, 0.22, 0.52)),
    Material("paint_grey", 0.30, (0.38, 0.39, 0.40)),
    Material("paint_green", 0.15, (0.10, 0.30, 0.18)),
    Material("paint_yellow", 0.45, (0.90, 0.72, 0.10)),
    Material("wood", 0.20, (0.45, 0.32, 0.20)),
    Material("dirt", 0.20, (0.42, 0.35, 0.26)),
)

_INDEX = {m.name: i for i, m in enumerate(MATERIALS)}

PAINTS: tuple[str, ...] = tuple(m.name for m in MATERIALS if m.name.startswith("paint_"))
CLOTHES: tuple[str, ...] = ("cloth_dark", "cloth_light", "cloth_blue")
FACADES: tuple[str, ...] = ("brick", "concrete", "plaster")
SIGNS: tuple[str, ...] = ("sign_red", "sign_blue", "sign_yellow")


def material_index(name: str) -> int:
    """Index of material `name` in `MATERIALS`; KeyError naming the known materials otherwise."""
    try:
        return _INDEX[name]
    except KeyError:
        raise KeyError(f"unknown material {name!r}; known: {', '.join(_INDEX)}") from None


def material_table() -> dict[str, np.ndarray]:
    """Per-material arrays indexed by material id: reflectivity (M,), colour (M, 3), transmission (M,)."""
    return {
        "reflectivity": np.array([m.reflectivity for m in MATERIALS], np.float64),
        "colour": np.array([m.colour for m in MATERIALS], np.float64),
        "transmission": np.array([m.transmission for m in MATERIALS], np.float64),
        "vegetation": np.array([m.vegetation for m in MATERIALS], bool),
    }
