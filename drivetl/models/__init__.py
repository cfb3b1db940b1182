"""drivetl.models: LiDAR and camera encoders, BEV fusion, the detection head, and the detector.

Build a model with typed constructors (or `instantiate` on a ``class_path``/``init_args`` config).
`drivetl.models.adapters` adapts a pretrained detector (the table of methods, `AdaptedDetector`);
`drivetl.models.checkpoint` loads pretrained tensors and writes a checkpoint's metadata.
"""

from drivetl.models.build import instantiate
from drivetl.models.camera import CameraEncoder, CameraOutputs, ImageBackbone
from drivetl.models.detector import BEVDetector, DetectorOutputs
from drivetl.models.fusion import BEVFusion
from drivetl.models.heads import BEVGeometry, CenterHead, Detections, decode
from drivetl.models.lidar import LidarEncoder, LidarOutputs

__all__ = [
    "BEVDetector",
    "BEVFusion",
    "BEVGeometry",
    "CameraEncoder",
    "CameraOutputs",
    "CenterHead",
    "Detections",
    "DetectorOutputs",
    "ImageBackbone",
    "LidarEncoder",
    "LidarOutputs",
    "decode",
    "instantiate",
]
