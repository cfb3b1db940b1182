"""A rig from a KITTI object-detection calibration file (`calib/NNNNNN.txt`).

KITTI projects a Velodyne point p (homogeneous, metres) into image 2 as `P2 @ R0_rect @ Tr_velo_to_cam @ p`.
Here the vehicle frame is the Velodyne frame, so the LiDAR `velodyne` sits at the identity, and camera
`camera_2` gets K = P2[:, :3] and an extrinsic that also carries P2's fourth column (the offset of
camera 2 from the rectified reference camera): with t = inv(K) @ P2[:, 3],
    optical_from_velodyne = [I | t] @ R0_rect @ Tr_velo_to_cam,
so `CameraModel.project` reproduces the matrix product exactly. R0_rect and Tr_velo_to_cam are kept as
written (they are orthonormal only to ~1e-7), so no re-orthonormalization changes the projection.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from drivetl.calib import se3
from drivetl.calib.camera import CAMERA_FROM_OPTICAL, CameraModel
from drivetl.calib.lidar import IntensityEncoding, LidarModel
from drivetl.calib.rig import SensorRig
from drivetl.errors import RigError

__all__ = ["hdl64e_inclinations", "read_kitti_calib", "rig_from_kitti_calib"]

_SHAPES = {
    "P0": (3, 4),
    "P1": (3, 4),
    "P2": (3, 4),
    "P3": (3, 4),
    "R0_rect": (3, 3),
    "Tr_velo_to_cam": (3, 4),
    "Tr_imu_to_velo": (3, 4),
}


def read_kitti_calib(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The matrices of a KITTI calib file as float64 arrays (P0..P3 (3, 4), R0_rect (3, 3), Tr_* (3, 4))."""
    where = str(path)
    try:
        lines = Path(path).read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise RigError(f"{where}: no such KITTI calibration file") from None
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise RigError(f"{where}: line {lineno}: expected 'KEY: numbers', got {line[:40]!r}")
        key = key.strip()
        try:
            values = np.array(rest.split(), dtype=np.float64)
        except ValueError:
            raise RigError(f"{where}: line {lineno} ({key}): not a list of numbers") from None
        shape = _SHAPES.get(key)
        if shape is not None:
            if values.size != shape[0] * shape[1]:
                raise RigError(f"{where}: {key}: expected {shape[0] * shape[1]} numbers, got {values.size}")
            values = values.reshape(shape)
        out[key] = values
    for key in ("P2", "R0_rect", "Tr_velo_to_cam"):
        if key not in out:
            raise RigError(f"{where}: missing {key}; is this a KITTI object calib file?")
    return out


def hdl64e_inclinations() -> np.ndarray:
    """(64,) ascending inclinations (radians) approximating the Velodyne HDL-64E of KITTI.

    Upper block: 32 beams from +2.0 to about -8.33 degrees in 1/3 degree steps; lower block: 32 beams
    from -8.83 to -24.33 degrees in 1/2 degree steps (the data sheet's nominal layout).
    """
    upper = 2.0 - np.arange(32) / 3.0
    lower = -8.83 - 0.5 * np.arange(32)
    return np.radians(np.sort(np.concatenate([upper, lower])))


def rig_from_kitti_calib(path: str | os.PathLike, image_size: tuple[int, int] = (1242, 375)) -> SensorRig:
    """A rig with LiDAR `velodyne` (vehicle frame = Velodyne frame) and camera `camera_2`.

    image_size: (width, height) of image_2; KITTI frames vary slightly (1224x370 .. 1242x376), so pass
    the size of the actual image.
    """
    where = str(path)
    calib = read_kitti_calib(path)
    p2 = calib["P2"]
    k = p2[:, :3]
    if abs(k[0, 1]) > 1e-9 or np.any(np.abs(k[2] - [0.0, 0.0, 1.0]) > 1e-9) or abs(k[1, 0]) > 1e-9:
        raise RigError(f"{where}: P2: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in its first 3 columns")
    r0 = np.eye(4)
    r0[:3, :3] = calib["R0_rect"]
    tr = np.eye(4)
    tr[:3, :] = calib["Tr_velo_to_cam"]
    se3.check_rigid(r0, f"{where}: R0_rect")
    se3.check_rigid(tr, f"{where}: Tr_velo_to_cam")
    shift = np.eye(4)
    shift[:3, 3] = np.linalg.solve(k, p2[:, 3])
    optical_from_velo = shift @ r0 @ tr
    vehicle_from_camera = np.linalg.inv(CAMERA_FROM_OPTICAL @ optical_from_velo)
    width, height = image_size
    camera = CameraModel(
        name="camera_2",
        width=int(width),
        height=int(height),
        fx=float(k[0, 0]),
        fy=float(k[1, 1]),
        cx=float(k[0, 2]),
        cy=float(k[1, 2]),
        vehicle_from_camera=vehicle_from_camera,
    )
    lidar = LidarModel(
        name="velodyne",
        model="Velodyne HDL-64E",
        vehicle_from_lidar=np.eye(4),
        inclinations=hdl64e_inclinations(),
        columns=round(360 / 0.1728),
        max_range=120.0,
        intensity=IntensityEncoding("float", 1.0, "linear"),
    )
    # KITTI's Velodyne sits about 1.73 m above the road.
    return SensorRig(
        name=Path(where).stem, lidars=(lidar,), cameras=(camera,), ground=-1.73, source_path=where
    )
