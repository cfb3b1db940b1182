"""Sensor simulation: procedural street scenes rendered through any rig with open3d ray casting.

Public API:

- `generate_scene(seed, region)` -> `Scene` (road, sidewalks, buildings, furniture, traffic, people;
  every labelled `Actor` with an exact box); `region_stats`, `REGIONS` (object size statistics).
- `SceneCaster(scene, threads=0)`: the reusable ray-casting scene (open3d imported on first use;
  `threads=1` where worker processes share the cores).
- `RigSimulator(rig, waymo_layout=...)`: renders a frame (`SimFrame`: `FrameRecord`, per-laser
  `LidarScan` with Waymo range images and pixel pose, per-camera `CameraFrame` with depth).
- `LidarSimulator`, `LidarNoise`, `CameraSimulator`: one sensor at a time.
- `SimulationPlan`, `simulate_dataset(plan, workers)`: a whole dataset as Waymo v1 or v2, or the team format
  (what `drivetl simulate` runs).
"""

from drivetl.sim._raycast import Hits, SceneCaster
from drivetl.sim.camera import CameraFrame, CameraSimulator, encode_jpeg
from drivetl.sim.dataset import FORMATS, SimSummary, SimulationPlan, simulate_dataset
from drivetl.sim.frame import FRAME_PERIOD, LABEL_MARGIN, RigSimulator, SimFrame, points_in_box
from drivetl.sim.lidar import POINT_COLUMNS, LidarNoise, LidarScan, LidarSimulator
from drivetl.sim.materials import MATERIALS, Material
from drivetl.sim.regions import REGIONS, RegionStats, region_stats
from drivetl.sim.scene import Actor, Scene, generate_scene

__all__ = [
    "FORMATS",
    "FRAME_PERIOD",
    "LABEL_MARGIN",
    "MATERIALS",
    "POINT_COLUMNS",
    "REGIONS",
    "Actor",
    "CameraFrame",
    "CameraSimulator",
    "Hits",
    "LidarNoise",
    "LidarScan",
    "LidarSimulator",
    "Material",
    "RegionStats",
    "RigSimulator",
    "Scene",
    "SceneCaster",
    "SimFrame",
    "SimSummary",
    "SimulationPlan",
    "encode_jpeg",
    "generate_scene",
    "points_in_box",
    "region_stats",
    "simulate_dataset",
]
