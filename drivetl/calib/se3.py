"""Rigid transforms in 3D: 4x4 homogeneous matrices named `dst_from_src`.

Every transform is a float64 (4, 4) numpy array with `a_from_b @ p_b = p_a` for homogeneous column
points `p_b` (metres). Rotations are (3, 3) float64. Quaternions are named by their component order:
`wxyz` (Waymo v2, Eigen's constructor) or `xyzw` (ROS, scipy); both are accepted, never guessed.
Roll/pitch/yaw are radians with `R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`; with the vehicle frame
(x forward, y left, z up) a positive pitch turns the sensor's x axis downwards (nose down).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from drivetl.errors import RigError

__all__ = [
    "check_rigid",
    "compose",
    "invert",
    "make_transform",
    "quaternion_wxyz_from_rotation",
    "rotation_from_quaternion_wxyz",
    "rotation_from_quaternion_xyzw",
    "rotation_from_rpy",
    "rpy_from_rotation",
    "transform_points",
    "transforms_from_rpy_xyz",
]

#: Largest |R @ R.T - I| entry accepted as orthonormal (calibration files carry ~1e-7 rounding).
ORTHONORMAL_TOL = 1e-4


def make_transform(rotation: Any, translation: Any) -> np.ndarray:
    """The (4, 4) float64 transform with `rotation` (3, 3) and `translation` (3,) metres."""
    rot = np.asarray(rotation, dtype=np.float64)
    trans = np.asarray(translation, dtype=np.float64).reshape(-1)
    if rot.shape != (3, 3) or trans.shape != (3,):
        raise ValueError(
            f"make_transform needs a (3, 3) rotation and a (3,) translation, got {rot.shape}, {trans.shape}"
        )
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = trans
    return m


def invert(dst_from_src: np.ndarray) -> np.ndarray:
    """`src_from_dst` of a rigid (4, 4) transform, in closed form (R.T, -R.T @ t)."""
    m = np.asarray(dst_from_src, dtype=np.float64)
    rot_t = m[:3, :3].T
    out = np.eye(4)
    out[:3, :3] = rot_t
    out[:3, 3] = -rot_t @ m[:3, 3]
    return out


def compose(*transforms: np.ndarray) -> np.ndarray:
    """`a_from_b @ b_from_c @ ...` -> `a_from_...`: the plain matrix product, left to right."""
    if not transforms:
        return np.eye(4)
    out = np.asarray(transforms[0], dtype=np.float64)
    for m in transforms[1:]:
        out = out @ np.asarray(m, dtype=np.float64)
    return out


def transform_points(dst_from_src: np.ndarray, points: Any) -> Any:
    """Apply a (4, 4) transform to `points` (N, C>=3), numpy array or torch tensor.

    Only the first three columns (x, y, z in `src`, metres) are transformed; extra columns
    (intensity, time, ...) are returned unchanged. The result keeps the input's type, dtype and
    device; the arithmetic runs in the points' dtype.
    """
    m = np.array(dst_from_src, dtype=np.float64)  # a writable copy: torch warns on read-only arrays
    if isinstance(points, np.ndarray) or not hasattr(points, "new_tensor"):
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f"points must be (N, C>=3), got {pts.shape}")
        dtype = pts.dtype if np.issubdtype(pts.dtype, np.floating) else np.float64
        rot = m[:3, :3].astype(dtype)
        trans = m[:3, 3].astype(dtype)
        xyz = pts[:, :3].astype(dtype, copy=False) @ rot.T + trans
        if pts.shape[1] == 3:
            return xyz
        return np.concatenate([xyz, pts[:, 3:].astype(dtype, copy=False)], axis=1)
    import torch

    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, C>=3), got {tuple(points.shape)}")
    rot = torch.as_tensor(m[:3, :3], dtype=points.dtype, device=points.device)
    trans = torch.as_tensor(m[:3, 3], dtype=points.dtype, device=points.device)
    xyz = points[:, :3] @ rot.T + trans
    if points.shape[1] == 3:
        return xyz
    return torch.cat([xyz, points[:, 3:]], dim=1)


def rotation_from_quaternion_wxyz(q: Any) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion given as (w, x, y, z); it is normalized first."""
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if q.shape != (4,):
        raise ValueError(f"a quaternion has 4 components, got {q.shape}")
    norm = float(np.linalg.norm(q))
    if not norm > 0.0:
        raise ValueError("a zero quaternion is not a rotation")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_from_quaternion_xyzw(q: Any) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion given as (x, y, z, w); it is normalized first."""
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if q.shape != (4,):
        raise ValueError(f"a quaternion has 4 components, got {q.shape}")
    return rotation_from_quaternion_wxyz(np.roll(q, 1))


def quaternion_wxyz_from_rotation(rotation: Any) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a (3, 3) rotation (Shepperd's stable branch choice)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    diag = (trace, r[0, 0], r[1, 1], r[2, 2])
    k = int(np.argmax(diag))
    if k == 0:
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif k == 1:
        s = 2.0 * math.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 0.0))
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif k == 2:
        s = 2.0 * math.sqrt(max(1.0 - r[0, 0] + r[1, 1] - r[2, 2], 0.0))
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 - r[0, 0] - r[1, 1] + r[2, 2], 0.0))
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    out = np.asarray(q, dtype=np.float64)
    out /= np.linalg.norm(out)
    return -out if out[0] < 0 else out


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """(3, 3) rotation `Rz(yaw) @ Ry(pitch) @ Rx(roll)`; angles in radians."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def rotations_from_rpy(rpy: Any) -> np.ndarray:
    """(..., 3) rows of (roll, pitch, yaw) radians -> (..., 3, 3) float64 rotations
    ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``, vectorized."""
    a = np.asarray(rpy, dtype=np.float64)
    if a.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) roll, pitch, yaw; got {a.shape}")
    cr, sr = np.cos(a[..., 0]), np.sin(a[..., 0])
    cp, sp = np.cos(a[..., 1]), np.sin(a[..., 1])
    cy, sy = np.cos(a[..., 2]), np.sin(a[..., 2])
    out = np.empty((*a.shape[:-1], 3, 3))
    out[..., 0, 0] = cy * cp
    out[..., 0, 1] = cy * sp * sr - sy * cr
    out[..., 0, 2] = cy * sp * cr + sy * sr
    out[..., 1, 0] = sy * cp
    out[..., 1, 1] = sy * sp * sr + cy * cr
    out[..., 1, 2] = sy * sp * cr - cy * sr
    out[..., 2, 0] = -sp
    out[..., 2, 1] = cp * sr
    out[..., 2, 2] = cp * cr
    return out


def transforms_from_rpy_xyz(rpy_xyz: Any) -> np.ndarray:
    """(..., 6) rows of (roll, pitch, yaw, x, y, z) -> (..., 4, 4) float64 transforms, vectorized.

    Waymo v1 stores the TOP laser's per-pixel vehicle pose as such an (H, W, 6) image
    (`range_image_top_pose`), with the rotation Rz(yaw) @ Ry(pitch) @ Rx(roll) used here.
    """
    a = np.asarray(rpy_xyz, dtype=np.float64)
    if a.shape[-1] != 6:
        raise ValueError(f"expected (..., 6) roll, pitch, yaw, x, y, z; got {a.shape}")
    out = np.zeros((*a.shape[:-1], 4, 4))
    out[..., :3, :3] = rotations_from_rpy(a[..., :3])
    out[..., :3, 3] = a[..., 3:]
    out[..., 3, 3] = 1.0
    return out


def rpy_from_rotation(rotation: Any) -> tuple[float, float, float]:
    """(roll, pitch, yaw) radians with `R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`, pitch in [-pi/2, pi/2].

    At gimbal lock (|pitch| = pi/2) roll is set to 0 and the whole rotation about z goes to yaw.
    """
    r = np.asarray(rotation, dtype=np.float64)
    sp = -float(np.clip(r[2, 0], -1.0, 1.0))
    cp = math.hypot(r[0, 0], r[1, 0])
    pitch = math.atan2(sp, cp)
    if cp > 1e-9:
        roll = math.atan2(r[2, 1], r[2, 2])
        yaw = math.atan2(r[1, 0], r[0, 0])
    else:
        roll = 0.0
        yaw = math.atan2(-r[0, 1], r[1, 1])
    return roll, pitch, yaw


def check_rigid(m: Any, where: str, tol: float = ORTHONORMAL_TOL) -> np.ndarray:
    """Return `m` as a float64 (4, 4) rigid transform, or raise RigError naming `where`.

    Checks the shape, finiteness, the last row (0, 0, 0, 1), orthonormality of the rotation
    (|R @ R.T - I| <= tol) and det(R) = +1 (no reflection).
    """
    try:
        arr = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise RigError(f"{where}: not a numeric 4x4 matrix") from None
    if arr.shape != (4, 4):
        raise RigError(f"{where}: expected a 4x4 matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RigError(f"{where}: matrix has NaN or infinite entries")
    if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise RigError(f"{where}: last row must be [0, 0, 0, 1], got {arr[3].tolist()}")
    rot = arr[:3, :3]
    det = float(np.linalg.det(rot))
    err = float(np.max(np.abs(rot @ rot.T - np.eye(3))))
    if err > tol or abs(det - 1.0) > 3 * tol:
        if det < 0:
            raise RigError(f"{where}: rotation is a reflection (det={det:.3g}); fix the sign of one axis")
        raise RigError(f"{where}: rotation is not orthonormal (det={det:.3g}, max |R R^T - I| = {err:.2g})")
    return arr
