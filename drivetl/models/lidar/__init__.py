"""drivetl.models.lidar: pillar LiDAR encoder (owns its voxel grid; voxelizes with drivetl.ops)."""

from drivetl.models.lidar._pillars import PillarFeatureNet, Pillars, pillarize
from drivetl.models.lidar.encoder import LidarEncoder, LidarOutputs

__all__ = ["LidarEncoder", "LidarOutputs", "PillarFeatureNet", "Pillars", "pillarize"]
