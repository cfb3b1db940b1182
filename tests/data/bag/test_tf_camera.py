"""tf trees (static chains, interpolated /tf) and CameraInfo / Image conversion."""

from __future__ import annotations

import io
from types import SimpleNamespace as NS

import numpy as np
import pytest
from PIL import Image

from drivetl.calib import CAMERA_FROM_OPTICAL, make_transform, rotation_from_rpy
from drivetl.data.formats.bag._camera import camera_from_info, image_from_compressed, image_from_raw
from drivetl.data.formats.bag._messages import MessageFactory
from drivetl.data.formats.bag._tf import TfTree
from drivetl.errors import DataError

F = MessageFactory("cdr")


def tfm(*transforms):
    return F.tf_message(list(transforms))


def pose(rpy, xyz):
    return make_transform(rotation_from_rpy(*rpy), xyz)


def test_static_chain_and_sibling_frames_compose_through_their_common_parent():
    base_from_lidar = pose((0.01, 0.03, 1.2), (1.2, 0.1, 1.9))
    base_from_cam = pose((0.0, 0.07, -0.2), (1.6, -0.3, 1.5))
    tree = TfTree()
    tree.add(
        tfm(
            F.transform(0, "/base_link", "lidar", base_from_lidar),
            F.transform(0, "base_link", "cam_link", base_from_cam),
            F.transform(0, "cam_link", "cam_optical", CAMERA_FROM_OPTICAL),
        ),
        static=True,
        where="t",
    )
    np.testing.assert_allclose(tree.dst_from_src("base_link", "lidar"), base_from_lidar, atol=1e-12)
    want = np.linalg.inv(base_from_lidar) @ base_from_cam @ CAMERA_FROM_OPTICAL
    np.testing.assert_allclose(tree.dst_from_src("lidar", "cam_optical"), want, atol=1e-12)
    assert tree.dst_from_src("base_link", "elsewhere") is None
    with pytest.raises(DataError, match="no tf path from 'elsewhere' to 'base_link'"):
        tree.require("base_link", "elsewhere", "log.bag")


def test_dynamic_tf_is_interpolated_between_samples():
    tree = TfTree()
    a, b = pose((0, 0, 0.0), (0, 0, 0)), pose((0, 0, 0.2), (2.0, 1.0, 0))
    tree.add(tfm(F.transform(1_000_000_000, "odom", "base_link", a)), static=False, where="t")
    tree.add(tfm(F.transform(1_100_000_000, "odom", "base_link", b)), static=False, where="t")
    root, m = tree.root_from("base_link", 1_050_000_000)
    assert root == "odom"
    np.testing.assert_allclose(m, pose((0, 0, 0.1), (1.0, 0.5, 0)), atol=1e-12)
    assert tree.root_from("base_link", 5_000_000_000)[0] == "base_link"  # far outside: no pose


def test_non_unit_quaternion_is_refused():
    bad = F.transform(0, "a", "b", np.eye(4))
    bad.transform.rotation.w = 3.0
    with pytest.raises(DataError, match=r"log.bag: topic /tf_static.*non-unit quaternion"):
        TfTree().add(tfm(bad), static=True, where="log.bag: topic /tf_static message 0")


def info(model, d, k=(500.0, 0, 320, 0, 510.0, 240, 0, 0, 1)):
    return NS(
        width=640,
        height=480,
        distortion_model=model,
        d=np.array(d),
        k=np.array(k),
        binning_x=0,
        binning_y=0,
        roi=NS(width=0),
        header=NS(frame_id="cam_optical"),
    )


def test_camera_info_models():
    cam = camera_from_info(info("plumb_bob", [-0.3, 0.1, 0.001, -0.002, 0.01]), "FRONT", np.eye(4), "w")
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (500.0, 510.0, 320.0, 240.0)
    assert (cam.k1, cam.k2, cam.p1, cam.p2, cam.k3) == (-0.3, 0.1, 0.001, -0.002, 0.01)
    np.testing.assert_allclose(
        cam.vehicle_from_camera,
        np.linalg.inv(CAMERA_FROM_OPTICAL) @ CAMERA_FROM_OPTICAL @ CAMERA_FROM_OPTICAL.T,
        atol=0,
    )
    rat = camera_from_info(info("rational_polynomial", [-0.3, 0.1, 0, 0, 0.01, 0, 0, 0]), "F", np.eye(4), "w")
    assert rat.k3 == 0.01
    with pytest.raises(DataError, match=r"log.bag: topic /cam/camera_info.*rational_polynomial with k4..k6"):
        camera_from_info(
            info("rational_polynomial", [-0.3, 0.1, 0, 0, 0.01, 0.2, 0, 0]),
            "F",
            np.eye(4),
            "log.bag: topic /cam/camera_info message 0",
        )
    with pytest.raises(DataError, match="distortion model 'equidistant' is not supported"):
        camera_from_info(info("equidistant", [0.1, 0.01, 0, 0]), "F", np.eye(4), "w")
    with pytest.raises(DataError, match="skew"):
        camera_from_info(
            info("plumb_bob", [0] * 5, k=(500.0, 2.0, 320, 0, 510.0, 240, 0, 0, 1)), "F", np.eye(4), "w"
        )


def test_images_raw_encodings_and_compressed():
    rgb = np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    msg = NS(
        height=6,
        width=5,
        step=16,
        encoding="bgr8",
        is_bigendian=0,
        data=np.concatenate([np.c_[rgb[..., ::-1].reshape(6, 15), np.zeros((6, 1), np.uint8)]]).reshape(-1),
    )
    img = image_from_raw(msg, "F", "w")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(img.data))), rgb)
    mono16 = (np.arange(30).reshape(6, 5) * 1000).astype(">u2")
    msg16 = NS(
        height=6,
        width=5,
        step=10,
        encoding="mono16",
        is_bigendian=1,
        data=np.frombuffer(mono16.tobytes(), np.uint8),
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(image_from_raw(msg16, "F", "w").data))), mono16
    )
    with pytest.raises(DataError, match="image encoding 'bayer_rggb8'"):
        image_from_raw(NS(**{**vars(msg), "encoding": "bayer_rggb8"}), "F", "w")
    with pytest.raises(DataError, match="holds 10 bytes"):
        image_from_raw(NS(**{**vars(msg), "data": msg.data[:10]}), "F", "w")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    assert (
        image_from_compressed(
            NS(format="png", data=np.frombuffer(buf.getvalue(), np.uint8)), "F", "w"
        ).encoding
        == "png"
    )
    with pytest.raises(DataError, match="neither JPEG nor PNG"):
        image_from_compressed(NS(format="h264", data=np.zeros(10, np.uint8)), "F", "w")
