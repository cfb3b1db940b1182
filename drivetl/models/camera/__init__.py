"""drivetl.models.camera: image backbone and calibration-explicit lift of image features to BEV."""

from drivetl.models.camera._projection import project_points
from drivetl.models.camera.encoder import CameraEncoder, CameraOutputs, ImageBackbone

__all__ = ["CameraEncoder", "CameraOutputs", "ImageBackbone", "project_points"]
