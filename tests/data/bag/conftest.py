"""A small simulated fleet_xt32 run (team format) that the bag tests write into logs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def sim_team(tmp_path_factory) -> Path:
    """Two frames of configs/rigs/fleet_xt32.yaml, cameras at 1/4 size, spinning-motion distortion off
    (a driver publishes each point in the sensor frame at its firing time, so its elevation is its beam's)."""
    from drivetl.calib import load_rig
    from drivetl.sim.dataset import SimulationPlan, simulate_dataset
    from drivetl.sim.lidar import LidarNoise

    out = tmp_path_factory.mktemp("sim_xt32")
    rig = load_rig(ROOT / "configs" / "rigs" / "fleet_xt32.yaml")
    plan = SimulationPlan(rig, 2, out, format="team", camera_scale=0.25, noise=LidarNoise(motion=False))
    simulate_dataset(plan)
    return out
