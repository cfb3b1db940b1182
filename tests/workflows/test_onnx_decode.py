"""The ONNX runner's numpy decoding: the torch decode's detections, and no torch in the runner's imports."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from drivetl.errors import CheckpointError
from drivetl.models import decode
from drivetl.models.heads import BoxCoding, rotated_iou_bev
from drivetl.workflows._onnx_decode import Postprocess, decode_maps, rotated_iou_bev_np
from drivetl.workflows.export_onnx import POSTPROCESS, coding_metadata

ROOT = Path(__file__).resolve().parents[2]


def _post(coding: BoxCoding, geometry, **overrides) -> Postprocess:
    bev = {k: getattr(geometry, k) for k in ("x_min", "y_min", "cell_x", "cell_y", "height", "width")}
    return Postprocess.from_dict({**POSTPROCESS, **overrides, "coding": coding_metadata(coding)}, bev)


def _assert_same(torch_det, np_det, where: str, rtol: float = 0.0) -> None:
    """Same count, classes and score order; boxes within 1e-4 (+ rtol; headings compared on the circle)."""
    assert len(np_det.scores) == len(torch_det.scores), f"{where}: other count"
    assert np_det.labels.tolist() == torch_det.labels.tolist(), f"{where}: other classes or order"
    np.testing.assert_allclose(np_det.scores, torch_det.scores.numpy(), atol=1e-6, rtol=rtol, err_msg=where)
    assert np.all(np.diff(np_det.scores) <= 0), f"{where}: not best first"
    want = torch_det.boxes.numpy()
    np.testing.assert_allclose(np_det.boxes[:, :6], want[:, :6], atol=1e-4, rtol=rtol, err_msg=where)
    turn = np.angle(np.exp(1j * (np_det.boxes[:, 6].astype(np.float64) - want[:, 6])))
    assert np.abs(turn).max(initial=0) <= 1e-4, f"{where}: headings differ by {np.abs(turn).max()}"
    assert np.all((np_det.boxes[:, 6] > -np.pi) & (np_det.boxes[:, 6] <= np.pi + 1e-6)), where


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    """6 frames of the simulated VLP-16 fleet rig, in the team format."""
    from drivetl.calib import load_rig
    from drivetl.sim.dataset import SimulationPlan, simulate_dataset

    out = tmp_path_factory.mktemp("decode") / "fleet"
    rig = load_rig(ROOT / "configs" / "rigs" / "fleet_vlp16.yaml")
    simulate_dataset(SimulationPlan(rig=rig, frames=6, out=out, format="team", seed=11, camera_scale=0.1))
    return out


def _spec(detector_spec_factory, coding: str) -> dict:
    """The small LiDAR-only detector; "priors_direction": size priors, direction classifier, a two-layer
    pillar net (the demo's and the Waymo-scale coding, and the pillar max concatenated back)."""
    spec = copy.deepcopy(detector_spec_factory(camera=False))
    if coding == "priors_direction":
        spec["init_args"].update(size_priors=True, direction_classifier=True)
        spec["init_args"]["lidar"]["init_args"]["pfn_channels"] = [16, 16]
    return spec


@pytest.fixture(scope="module", params=["plain", "priors_direction"])
def exported(request, tmp_path_factory, detector_spec_factory, fleet_files) -> dict:
    """A checkpoint of the small detector, its ONNX export, and its torch model."""
    from drivetl.workflows.evaluate import ModelSpec, load_model
    from drivetl.workflows.export_onnx import export_onnx

    d = tmp_path_factory.mktemp(f"onnx_{request.param}")
    ckpt = fleet_files.write_checkpoint(d / "m.ckpt", _spec(detector_spec_factory, request.param), seed=4)
    result = export_onnx(str(ckpt), d / "m.onnx")
    loaded = load_model(ModelSpec.parse(str(ckpt)))
    return {"ckpt": ckpt, "onnx": result.path, "loaded": loaded, "coding": request.param, "dir": d}


def _frames(fleet: Path, loaded):
    from drivetl.data.dataset import Collate, FrameDataset, FrameSet
    from drivetl.workflows.evaluate import open_eval_data

    data = open_eval_data(fleet)
    ds = FrameDataset([FrameSet(data.source, data.indices)], loaded.batch_spec)
    collate = Collate(loaded.batch_spec, with_samples=True)
    return [collate([ds[i]]) for i in range(len(ds))]


def test_numpy_decode_gives_the_torch_decode_detections_on_fleet_frames(exported, fleet) -> None:
    """On the same outputs (torch's), numpy and torch decode to the same boxes; and onnxruntime's maps
    (point-level input, scatter-max) match torch's to 1e-4 and decode to the same boxes too."""
    from drivetl.models.adapters import adapted_forward
    from drivetl.workflows._onnx_runner import OnnxDetector

    model = exported["loaded"].model
    runner = OnnxDetector(exported["onnx"])
    post = _post(model.head.coding, model.geometry)
    assert post.direction == (exported["coding"] == "priors_direction")
    assert (post.log_priors is not None) == post.direction
    total = suppressed = flipped = 0
    for samples, batch in _frames(fleet, exported["loaded"]):
        key = str(samples[0].key)
        with torch.no_grad():
            out = adapted_forward(model, batch)
        # a low threshold keeps ~top_k candidates, so NMS and the max-detections cut both act
        want = decode(out.heatmap, out.regression, out.geometry, score_threshold=0.05, coding=out.coding)[0]
        got = decode_maps(out.heatmap.numpy(), out.regression.numpy(), post, 0.05)[0]
        _assert_same(want, got, key)
        heat, reg = runner.maps(samples[0].points, samples[0].columns)
        assert np.abs(heat - out.heatmap.numpy()).max() <= 1e-4, key
        assert np.abs(reg - out.regression.numpy()).max() <= 1e-4, key
        # maps within 1e-4 give sizes within a relative 1e-4 (exp); untrained heads predict sizes up to e^6 m
        found = runner.detect(samples[0].points, samples[0].columns, 0.05)
        _assert_same(want, found, f"{key} onnxruntime", rtol=1e-5)
        maps = (out.heatmap.numpy(), out.regression.numpy())
        unlimited = _post(out.coding, out.geometry, max_detections=10**6)
        kept = decode_maps(*maps, unlimited, 0.05)[0]
        candidates = decode_maps(
            *maps, _post(out.coding, out.geometry, nms_iou=1.1, max_detections=10**6), 0.05
        )[0]
        total += len(got.scores)
        suppressed += len(candidates.scores) - len(kept.scores)
        flipped += int((np.abs(got.boxes[:, 6]) > np.pi / 2 + 1e-3).sum())  # the axis turned by pi
    assert total > 0 and suppressed > 0, "the frames must exercise NMS"
    if post.direction:
        assert flipped > 0, "the frames must exercise the direction classifier's flips"


def test_rotated_iou_numpy_matches_torch_and_known_values() -> None:
    rng = np.random.default_rng(0)
    boxes = np.column_stack(
        [
            rng.uniform(-3, 3, (60, 2)),
            np.zeros(60),
            rng.uniform(0.5, 4, (60, 3)),
            rng.uniform(-np.pi, np.pi, 60),
        ]
    ).astype(np.float32)
    got = rotated_iou_bev_np(boxes, boxes[:40])
    want = rotated_iou_bev(torch.from_numpy(boxes), torch.from_numpy(boxes[:40])).numpy()
    assert got.shape == (60, 40) and np.abs(got - want).max() <= 1e-5
    assert 0 < (got > 0.2).sum() < got.size
    unit = np.array([[0, 0, 0, 2, 2, 1, 0]], np.float32)
    octagon = 4 - 2 * (2 - np.sqrt(2)) ** 2  # a 2 m square and itself turned 45 degrees overlap in it
    cases = {
        "same": (unit, 1.0),
        "square turned 90 degrees": (unit + [0, 0, 0, 0, 0, 0, np.pi / 2], 1.0),
        "half shifted": (unit + [1, 0, 0, 0, 0, 0, 0], 2 / 6),
        "apart": (unit + [5, 0, 0, 0, 0, 0, 0], 0.0),
        "square turned 45 degrees": (unit + [0, 0, 0, 0, 0, 0, np.pi / 4], octagon / (8 - octagon)),
    }
    for name, (other, iou) in cases.items():
        assert rotated_iou_bev_np(unit, other.astype(np.float32))[0, 0] == pytest.approx(iou, abs=1e-5), name


@pytest.mark.parametrize("missing", ["version", "coding", "direction_axis", "top_k"])
def test_incomplete_postprocess_metadata_is_refused_by_name(missing) -> None:
    from drivetl.models.heads import BEVGeometry

    post = {**POSTPROCESS, "coding": coding_metadata(BoxCoding())}
    if missing == "direction_axis":
        post["coding"] = {k: v for k, v in post["coding"].items() if k != missing}
    else:
        post.pop(missing)
    geometry = BEVGeometry(-12.8, -12.8, 0.8, 0.8, 32, 32)
    bev = {k: getattr(geometry, k) for k in ("x_min", "y_min", "cell_x", "cell_y", "height", "width")}
    with pytest.raises(CheckpointError, match="m.onnx: post-processing") as err:
        Postprocess.from_dict(post, bev, "m.onnx")
    assert "drivetl export onnx" in str(err.value)


_TORCH_FREE = textwrap.dedent(
    """
    import json, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, NoTorch())
    import numpy as np
    from drivetl.workflows._onnx_runner import OnnxDetector

    det = OnnxDetector(sys.argv[1]).detect(np.load(sys.argv[2]), sys.argv[3].split(","), 0.05)
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({"torch": loaded, "boxes": det.boxes.tolist(), "scores": det.scores.tolist(),
                      "labels": det.labels.tolist()}))
    """
)


@pytest.mark.parametrize("exported", ["priors_direction"], indirect=True)
def test_onnx_runner_detects_in_an_interpreter_without_torch(exported, fleet, tmp_path) -> None:
    """Pre-processing, onnxruntime and decoding run where torch cannot be imported, and give the
    torch model's boxes."""
    from drivetl.models.adapters import adapted_forward

    samples, batch = _frames(fleet, exported["loaded"])[0]
    np.save(tmp_path / "points.npy", samples[0].points)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            _TORCH_FREE,
            str(exported["onnx"]),
            str(tmp_path / "points.npy"),
            ",".join(samples[0].columns),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout.strip().splitlines()[-1])
    assert doc["torch"] == []
    with torch.no_grad():
        out = adapted_forward(exported["loaded"].model, batch)
    want = decode(out.heatmap, out.regression, out.geometry, score_threshold=0.05, coding=out.coding)[0]
    assert len(want.scores) > 0
    got = type("D", (), {k: np.asarray(doc[k]) for k in ("boxes", "scores", "labels")})()
    _assert_same(want, got, "torch-free run", rtol=1e-5)


def test_numpy_decode_rectifies_scores_with_the_iou_channel_as_torch_does() -> None:
    import torch

    from drivetl.models.heads import BEVGeometry, BoxCoding, decode
    from drivetl.workflows._onnx_decode import Postprocess, decode_maps

    g = torch.Generator().manual_seed(3)
    heat = torch.randn(2, 2, 16, 16, generator=g) * 2
    reg = torch.randn(2, 10, 16, 16, generator=g) * 0.3
    priors = torch.tensor([[4.7, 2.0, 1.7], [0.7, 0.7, 1.75]]).log()
    geo = BEVGeometry(-8.0, -8.0, 1.0, 1.0, 16, 16)
    coding = BoxCoding(priors, direction=True, iou=True, iou_alpha=0.6)
    want = decode(heat, reg, geo, coding=coding, score_threshold=0.2)
    post = Postprocess(-8.0, -8.0, 1.0, 1.0, 16, 16, priors.numpy(), True, iou=True, iou_alpha=0.6)
    got = decode_maps(heat.numpy(), reg.numpy(), post, 0.2)
    for w, n in zip(want, got, strict=True):
        assert len(w.scores) == len(n.scores) > 0
        assert np.allclose(w.scores.numpy(), n.scores, atol=1e-6)
        assert np.allclose(w.boxes.numpy(), n.boxes, atol=1e-4)
    no_iou = Postprocess(-8.0, -8.0, 1.0, 1.0, 16, 16, priors.numpy(), True)
    plain = decode_maps(heat.numpy(), reg.numpy()[:, :9], no_iou, 0.2)
    assert not np.allclose(np.sort(plain[0].scores)[-3:], np.sort(got[0].scores)[-3:])
