"""drivetl.calib: sensor geometry — rigid transforms, camera and LiDAR models, the rig file, the rig vector,
beam estimation (`beams`) and vendor beam tables (`vendor`).

Imports nothing else of drivetl except `drivetl.errors` (and the `drivetl._io` leaf for writing).
"""

from drivetl.calib.camera import CAMERA_FROM_OPTICAL, OPTICAL_FROM_CAMERA, CameraModel
from drivetl.calib.kitti import rig_from_kitti_calib
from drivetl.calib.lidar import IntensityEncoding, LidarModel
from drivetl.calib.rig import SensorRig, load_rig, rig_from_dict, rig_to_dict, save_rig
from drivetl.calib.rig_vector import RIG_FIELD_DOCS, RIG_FIELDS, RIG_VECTOR_DIM, describe_rig, rig_vector
from drivetl.calib.se3 import (
    check_rigid,
    compose,
    invert,
    make_transform,
    quaternion_wxyz_from_rotation,
    rotation_from_quaternion_wxyz,
    rotation_from_quaternion_xyzw,
    rotation_from_rpy,
    rotations_from_rpy,
    rpy_from_rotation,
    transform_points,
    transforms_from_rpy_xyz,
)

__all__ = [
    "CAMERA_FROM_OPTICAL",
    "OPTICAL_FROM_CAMERA",
    "RIG_FIELDS",
    "RIG_FIELD_DOCS",
    "RIG_VECTOR_DIM",
    "CameraModel",
    "IntensityEncoding",
    "LidarModel",
    "SensorRig",
    "check_rigid",
    "compose",
    "describe_rig",
    "invert",
    "load_rig",
    "make_transform",
    "quaternion_wxyz_from_rotation",
    "rig_from_dict",
    "rig_from_kitti_calib",
    "rig_to_dict",
    "rig_vector",
    "rotation_from_quaternion_wxyz",
    "rotation_from_quaternion_xyzw",
    "rotation_from_rpy",
    "rotations_from_rpy",
    "rpy_from_rotation",
    "save_rig",
    "transform_points",
    "transforms_from_rpy_xyz",
]
