"""drivetl.models.lidar: pillar LiDAR encoder (owns its voxel grid; voxelizes with drivetl.ops)."""

from drivetl.models.lidar._pillars import (
    HEIGHT_STATS,
    PillarFeatureNet,
    Pillars,
    ground_relative,
    height_stats,
    local_ground,
    pillarize,
)
from drivetl.models.lidar.encoder import LidarEncoder, LidarOutputs

__all__ = [
    "HEIGHT_STATS",
    "LidarEncoder",
    "LidarOutputs",
    "PillarFeatureNet",
    "Pillars",
    "ground_relative",
    "height_stats",
    "local_ground",
    "pillarize",
]
