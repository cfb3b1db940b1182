"""`sensor_msgs/CameraInfo` -> the rig's camera model; `Image` and `CompressedImage` -> encoded images.

CameraInfo (ROS 1 spells its arrays K, D, P; ROS 2 k, d, p): K is the row-major 3x3 intrinsic
matrix (fx, 0, cx; 0, fy, cy; 0, 0, 1) of the *raw* (distorted) image, D the distortion of
`distortion_model`. drivetl's camera model is pinhole + Brown–Conrady k1, k2, p1, p2, k3, so:
- `plumb_bob`: D = (k1, k2, p1, p2, k3), taken as is (fewer values: the rest are 0);
- `rational_polynomial`: D = (k1, k2, p1, p2, k3, k4, k5, k6); accepted when k4 = k5 = k6 = 0 (then it
  is plumb_bob), refused otherwise;
- an empty model with an all-zero D: no distortion; anything else (`equidistant`, ...) is refused.
The CameraInfo's frame is the *optical* frame (x right, y down, z forward); the rig stores the
Waymo camera frame, so `vehicle_from_camera = vehicle_from_optical @ OPTICAL_FROM_CAMERA`.

Images: CompressedImage payloads in JPEG or PNG are kept byte for byte; raw Images (mono8, mono16,
rgb8, bgr8, rgba8, bgra8) are encoded losslessly as PNG.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from drivetl.calib.camera import OPTICAL_FROM_CAMERA, CameraModel
from drivetl.data.records import CameraImage
from drivetl.errors import DataError

_CHANNELS = {"mono8": 1, "8uc1": 1, "mono16": 1, "16uc1": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}
_MAX_PIXELS = 100_000_000


def _array(msg: Any, *names: str) -> list[float]:
    for name in names:
        if hasattr(msg, name):
            return [float(v) for v in np.asarray(getattr(msg, name)).reshape(-1)]
    return []


def camera_from_info(msg: Any, name: str, vehicle_from_optical: np.ndarray, where: str) -> CameraModel:
    """The rig camera `name` of a CameraInfo message mounted at `vehicle_from_optical` (4, 4), metres.

    Raises DataError naming `where` and the distortion model when drivetl's camera model cannot
    represent it, or when K is not a pinhole matrix.
    """
    k = _array(msg, "k", "K")
    d = _array(msg, "d", "D")
    model = str(getattr(msg, "distortion_model", "") or "").strip().lower()
    if len(k) != 9 or k[0] <= 0 or k[4] <= 0:
        raise DataError(f"{where}: K {k[:9]} is not a pinhole matrix with positive focal lengths")
    if abs(k[1]) > 1e-9 or any(abs(v) > 1e-9 for v in k[3:4] + k[6:8]) or abs(k[8] - 1.0) > 1e-9:
        raise DataError(f"{where}: K has skew or a non-standard last row {k}; drivetl's pinhole has neither")
    binning = (int(getattr(msg, "binning_x", 0) or 0), int(getattr(msg, "binning_y", 0) or 0))
    roi = getattr(msg, "roi", None)
    if max(binning) > 1 or (roi is not None and int(getattr(roi, "width", 0) or 0) > 0):
        raise DataError(
            f"{where}: binning {binning} or a region of interest is set; import the full-resolution "
            "camera (drivetl's rig describes the whole sensor image)"
        )
    if model in ("plumb_bob", "radtan") or (model == "" and not any(d)):
        coeffs = (d + [0.0] * 5)[:5]
        if len(d) > 5 and any(d[5:]):
            raise DataError(f"{where}: plumb_bob with {len(d)} coefficients {d}; it has 5 (k1 k2 p1 p2 k3)")
    elif model == "rational_polynomial":
        if any(abs(v) > 0 for v in d[5:8]):
            raise DataError(
                f"{where}: distortion model rational_polynomial with k4..k6 = {d[5:8]} cannot be "
                "represented by drivetl's Brown-Conrady model (k1 k2 p1 p2 k3); recalibrate with plumb_bob"
            )
        coeffs = (d + [0.0] * 5)[:5]
    else:
        raise DataError(
            f"{where}: distortion model {model!r} is not supported; drivetl's camera model is plumb_bob "
            "(Brown-Conrady k1 k2 p1 p2 k3); recalibrate with plumb_bob or rational_polynomial"
        )
    k1, k2, p1, p2, k3 = coeffs
    return CameraModel(
        name=name,
        width=int(msg.width),
        height=int(msg.height),
        fx=k[0],
        fy=k[4],
        cx=k[2],
        cy=k[5],
        k1=k1,
        k2=k2,
        p1=p1,
        p2=p2,
        k3=k3,
        vehicle_from_camera=np.asarray(vehicle_from_optical, dtype=np.float64) @ OPTICAL_FROM_CAMERA,
    )


def image_from_compressed(msg: Any, name: str, where: str) -> CameraImage:
    """A CompressedImage's JPEG or PNG payload, unchanged; DataError for another format."""
    data = bytes(memoryview(msg.data))
    fmt = str(getattr(msg, "format", "")).lower()
    if data[:3] == b"\xff\xd8\xff":
        encoding = "jpeg"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        encoding = "png"
    else:
        raise DataError(
            f"{where}: CompressedImage format {fmt[:40]!r} is neither JPEG nor PNG "
            "(only those two are stored); re-record with image_transport's jpeg or png compression"
        )
    return CameraImage(name, data, encoding)


def image_from_raw(msg: Any, name: str, where: str) -> CameraImage:
    """A raw sensor_msgs/Image encoded losslessly as PNG (RGB for colour, L / I;16 for mono)."""
    from PIL import Image

    enc = str(msg.encoding).lower()
    if enc not in _CHANNELS:
        raise DataError(
            f"{where}: image encoding {enc[:20]!r} is not one of {sorted(_CHANNELS)}; "
            "convert it (or record CompressedImage)"
        )
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    ch = _CHANNELS[enc]
    depth = 2 if "16" in enc else 1
    if h * w > _MAX_PIXELS or step < w * ch * depth:
        raise DataError(f"{where}: image {w}x{h} with step {step} is inconsistent or too large")
    data = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if data.size < h * step:
        raise DataError(f"{where}: image data holds {data.size} bytes, {h} rows x step {step} need more")
    rows = data[: h * step].reshape(h, step)[:, : w * ch * depth]
    if depth == 2:
        order = ">" if int(getattr(msg, "is_bigendian", 0)) else "<"
        arr = np.ascontiguousarray(rows).view(order + "u2").reshape(h, w).astype(np.uint16)
        img = Image.fromarray(arr)
    else:
        arr = np.ascontiguousarray(rows).reshape(h, w, ch)
        if enc.startswith("bgr"):
            arr = arr[..., [2, 1, 0, 3][:ch]]
        img = Image.fromarray(arr[..., 0] if ch == 1 else arr[..., :3])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return CameraImage(name, buf.getvalue(), "png")
