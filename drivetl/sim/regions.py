"""Size statistics of the simulated world by region.

Object size bias is the largest cross-dataset gap reported for 3D detection (cars in the US are
longer and wider than in Europe; the vehicle mix differs). A `RegionStats` holds the knobs a scene
draws from; `region_stats(name)` returns one of the closed set `REGIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from drivetl.errors import ConfigError

__all__ = ["REGIONS", "RegionStats", "region_stats"]

REGIONS: tuple[str, ...] = ("us", "eu")


@dataclass(frozen=True)
class RegionStats:
    """vehicle_mix: kind -> probability; vehicle_size: kind -> mean (length, width, height) metres;
    size_jitter: relative standard deviation of each dimension; lane_width: metres;
    pedestrian_height: mean, metres; yellow_centre_line: whether opposing traffic is split by a solid
    yellow line (else a dashed white one)."""

    name: str
    vehicle_mix: Mapping[str, float]
    vehicle_size: Mapping[str, tuple[float, float, float]]
    size_jitter: float
    lane_width: float
    pedestrian_height: float
    yellow_centre_line: bool


def region_stats(name: str) -> RegionStats:
    """The statistics of region `name` ("us": larger vehicles, more SUVs and pickups; "eu": smaller)."""
    match name:
        case "us":
            return RegionStats(
                "us",
                MappingProxyType(
                    {"car": 0.34, "suv": 0.3, "pickup": 0.15, "van": 0.08, "truck": 0.09, "bus": 0.04}
                ),
                MappingProxyType(
                    {
                        "car": (4.85, 1.87, 1.47),
                        "suv": (5.0, 2.0, 1.78),
                        "pickup": (5.7, 2.03, 1.9),
                        "van": (5.6, 2.05, 2.25),
                        "truck": (10.0, 2.55, 3.6),
                        "bus": (12.2, 2.6, 3.2),
                    }
                ),
                0.05,
                3.65,
                1.71,
                True,
            )
        case "eu":
            return RegionStats(
                "eu",
                MappingProxyType(
                    {"car": 0.6, "suv": 0.16, "pickup": 0.02, "van": 0.12, "truck": 0.06, "bus": 0.04}
                ),
                MappingProxyType(
                    {
                        "car": (4.3, 1.8, 1.47),
                        "suv": (4.55, 1.88, 1.65),
                        "pickup": (5.3, 1.9, 1.8),
                        "van": (5.1, 1.98, 2.1),
                        "truck": (8.5, 2.5, 3.4),
                        "bus": (12.0, 2.55, 3.1),
                    }
                ),
                0.05,
                3.25,
                1.73,
                False,
            )
        case _:
            raise ConfigError(f"--region {name!r}: unknown region; use one of {', '.join(REGIONS)}")
