"""`drivetl export onnx`: adapters merged, metadata, onnxruntime agreeing with torch on simulated frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from drivetl.cli import main  # noqa: E402
from drivetl.models import decode  # noqa: E402
from drivetl.workflows.evaluate import ModelSpec, load_model, open_eval_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Path:
    """20 frames of the simulated VLP-16 fleet rig, in the team format."""
    from drivetl.calib import load_rig
    from drivetl.sim.dataset import SimulationPlan, simulate_dataset

    out = tmp_path_factory.mktemp("export") / "fleet"
    rig = load_rig(ROOT / "configs" / "rigs" / "fleet_vlp16.yaml")
    simulate_dataset(SimulationPlan(rig=rig, frames=20, out=out, format="team", seed=3, camera_scale=0.1))
    return out


def _adapted(tiny, tmp_path: Path, method: str) -> str:
    """ADAPTERS@BASE of the tiny checkpoint: LoRA (pillar net, backbone, head) or FiLM, off identity."""
    from drivetl.calib.rig_vector import RIG_VECTOR_DIM
    from drivetl.models.adapters import apply_lora, insert_film, save_adapters

    model = load_model(ModelSpec.parse(str(tiny["lidar"]))).model
    if method == "lora":
        apply_lora(model, ["lidar.pfn.layers.0.linear", "lidar.backbone.*", "head.*"], rank=2, alpha=4)
    else:
        insert_film(model, ["lidar.backbone.stages.1"], RIG_VECTOR_DIM, hidden=8)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "film" in name:
                p.normal_(0, 0.1)
    path = tmp_path / f"{method}.safetensors"
    save_adapters(model, path, {"method": method})
    return f"{path}@{tiny['lidar']}"


def _parity(spec: str, onnx_path: Path, fleet: Path, frames: int) -> tuple[float, float, int]:
    """Largest |onnx - torch| of heatmaps and of regression over `frames` frames, and boxes compared."""
    from drivetl.data.dataset import Collate, FrameDataset, FrameSet
    from drivetl.models.adapters import adapted_forward
    from drivetl.workflows._onnx_runner import OnnxDetector

    loaded = load_model(ModelSpec.parse(spec))
    runner = OnnxDetector(onnx_path)
    data = open_eval_data(fleet, max_frames=frames)
    ds = FrameDataset([FrameSet(data.source, data.indices)], loaded.batch_spec)
    collate = Collate(loaded.batch_spec, with_samples=True)
    heat_diff = reg_diff = 0.0
    boxes = 0
    for i in range(len(ds)):
        samples, batch = collate([ds[i]])
        with torch.no_grad():
            out = adapted_forward(loaded.model, batch)
        heat, reg = runner.maps(samples[0].points, samples[0].columns)
        heat_diff = max(heat_diff, float(np.abs(heat - out.heatmap.numpy()).max()))
        reg_diff = max(reg_diff, float(np.abs(reg - out.regression.numpy()).max()))
        a = decode(out.heatmap, out.regression, out.geometry, score_threshold=0.15)[0]
        b = decode(torch.from_numpy(heat), torch.from_numpy(reg), out.geometry, score_threshold=0.15)[0]
        assert torch.equal(a.labels, b.labels), f"frame {samples[0].key}: other classes"
        torch.testing.assert_close(a.boxes[:, :6], b.boxes[:, :6], atol=1e-4, rtol=0)
        # the heading is an atan2 of two regressed components: where both are small it amplifies
        # float32 differences of the runtimes, so it gets 1e-3 rad (0.06 degrees), compared wrapped
        turn = torch.remainder(a.boxes[:, 6] - b.boxes[:, 6] + torch.pi, 2 * torch.pi) - torch.pi
        assert bool((turn.abs() <= 1e-3).all()), f"frame {samples[0].key}: headings differ"
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
        boxes += len(a.boxes)
    return heat_diff, reg_diff, boxes


@pytest.mark.parametrize("frames", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_lora_export_has_no_adapter_tensors_and_matches_torch_on_fleet_frames(
    frames, tiny, fleet, tmp_path
) -> None:
    import onnx

    from drivetl.workflows._onnx_runner import read_onnx_metadata
    from drivetl.workflows.export_onnx import file_sha256

    spec = _adapted(tiny, tmp_path, "lora")
    out = tmp_path / "model.onnx"
    assert main(["export", "onnx", "--ckpt", spec, "--out", str(out), "--rig", str(fleet)]) == 0
    model = onnx.load(str(out))
    names = [t.name for t in model.graph.initializer] + [n.name for n in model.graph.node]
    assert names and not [n for n in names if "lora" in n.lower() or "film" in n.lower()]
    assert [i.name for i in model.graph.input] == ["features", "pillar_index", "coords"]
    dims = [[d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert dims[0][0] and dims[1][0] and dims[2][0], f"point and pillar counts must be dynamic, got {dims}"
    assert dims[0][0] == dims[1][0] and dims[0][1] == "" and dims[2][1] == "", dims
    reductions = [a.s for n in model.graph.node if n.op_type == "ScatterElements" for a in n.attribute]
    layers = len(load_model(ModelSpec.parse(spec)).model.lidar.pfn.layers)
    assert reductions.count(b"max") == layers, "one scatter-max per pillar-net layer"
    meta = read_onnx_metadata(out)
    adapter, base = spec.split("@")
    assert meta["checkpoint_sha256"] == file_sha256([Path(adapter), Path(base)])
    assert meta["classes"] == ["vehicle", "pedestrian", "cyclist", "sign"] and meta["rig"] == "fleet_vlp16"
    assert meta["columns"] == ["x", "y", "z", "intensity", "elongation"]
    assert meta["grid"]["point_range"] == [-12.8, -12.8, -1.0, 12.8, 12.8, 5.0]
    assert (
        meta["lora_merged"] >= 5
        and meta["batchnorm_folded"] >= 5
        and meta["preprocess"] == "drivetl.pillars/2"
    )
    assert meta["postprocess"]["version"] == "drivetl.decode/2"
    assert meta["postprocess"]["coding"]["direction_axis"] == pytest.approx(np.pi / 4)
    heat, reg, boxes = _parity(spec, out, fleet, frames)
    assert heat <= 1e-4 and reg <= 1e-4 and boxes > 0
    json.dumps(meta)


def test_film_export_needs_its_rig_and_then_matches(tiny, fleet, tmp_path, capsys) -> None:
    spec = _adapted(tiny, tmp_path, "film")
    out = tmp_path / "film.onnx"
    assert main(["export", "onnx", "--ckpt", spec, "--out", str(out)]) == 2
    assert "name the rig the export is for" in capsys.readouterr().err and not out.exists()
    assert main(["export", "onnx", "--ckpt", spec, "--out", str(out), "--rig", str(fleet / "rig.yaml")]) == 0
    heat, reg, _ = _parity(spec, out, fleet, 3)
    assert heat <= 1e-4 and reg <= 1e-4


def test_predict_with_onnx_writes_the_checkpoint_boxes(tiny, tmp_path) -> None:
    from drivetl.workflows.predict import predict

    out = tmp_path / "plain.onnx"
    assert main(["export", "onnx", "--ckpt", str(tiny["lidar"]), "--out", str(out)]) == 0
    kw = {"split": "test", "render": 0, "score_threshold": 0.2, "batch_size": 1, "log": None, "html": False}
    a = predict(str(tiny["lidar"]), tiny["data"], tmp_path / "torch", **kw)
    b = predict(None, tiny["data"], tmp_path / "onnx", onnx=out, **kw)
    assert a.predicted == b.predicted == 2 and a.detections == b.detections > 0
    for fa in sorted((tmp_path / "torch" / "frames").rglob("*.json")):
        fb = tmp_path / "onnx" / fa.relative_to(tmp_path / "torch")
        oa, ob = (json.loads(f.read_text())["labels"]["objects"] for f in (fa, fb))
        assert [o["class"] for o in oa] == [o["class"] for o in ob]
        np.testing.assert_allclose(
            [o["center"] + o["size"] for o in oa], [o["center"] + o["size"] for o in ob], atol=1e-4
        )


def test_camera_model_export_is_refused_with_one_line(tiny, tmp_path, capsys) -> None:
    assert main(["export", "onnx", "--ckpt", str(tiny["fusion"]), "--out", str(tmp_path / "f.onnx")]) == 2
    err = capsys.readouterr().err
    assert "LiDAR-only" in err and not (tmp_path / "f.onnx").exists()


def test_opset_without_scatter_max_is_refused_with_one_line(tiny, tmp_path, capsys) -> None:
    out = tmp_path / "old.onnx"
    assert main(["export", "onnx", "--ckpt", str(tiny["lidar"]), "--out", str(out), "--opset", "17"]) == 2
    err = capsys.readouterr().err
    assert "--opset 17" in err and "opset 18" in err and not out.exists()


@pytest.mark.slow
def test_waymo_scale_architecture_exports_and_matches_torch_on_a_full_sweep() -> None:
    """The LiDAR branch of configs/pretrain/waymo_fusion.yaml (0.32 m pillars over +-74.88 m, two
    pillar-net layers) on a 180k-point Waymo-like sweep (~15k pillars, the largest with hundreds of
    points): the point-level input keeps onnxruntime's memory to the points, and its maps match torch."""
    import copy

    import onnxruntime as ort
    import yaml

    from drivetl.data.collate import collate
    from drivetl.data.records import Boxes, FrameKey, Sample
    from drivetl.models import instantiate
    from drivetl.ops._synthetic import waymo_like_points
    from drivetl.workflows._onnx_graph import PillarGraph, plain_detector
    from drivetl.workflows._pillar_input import PillarSpec, make_pillars
    from drivetl.workflows.export_onnx import _export_bytes

    cfg = yaml.safe_load((ROOT / "configs" / "pretrain" / "waymo_fusion.yaml").read_text())
    det_spec = copy.deepcopy(cfg["model"]["init_args"]["detector"])
    for key in ("camera", "camera_dropout", "camera_lift_stride"):
        det_spec["init_args"].pop(key, None)
    det_spec["init_args"].update(occupancy_head=False, align_head=False)
    torch.manual_seed(0)
    det = instantiate(det_spec).eval()
    columns = ("x", "y", "z", "intensity", "elongation")
    points = waymo_like_points(180_000, seed=3).numpy()
    points = np.column_stack([points, np.zeros(len(points), np.float32)])
    lid = det.lidar
    spec = PillarSpec(lid.grid.voxel_size, lid.grid.point_range, columns, lid.pfn.use_elongation)
    inputs = make_pillars(points, columns, spec)
    largest = int(np.bincount(inputs.pillar_index).max())
    assert len(inputs.coords) > 10_000 and largest > 200, (len(inputs.coords), largest)
    plain, _ = plain_detector(det)
    proto = _export_bytes(PillarGraph(plain).eval(), tuple(torch.from_numpy(a) for a in inputs.arrays()), 18)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    heat, reg = session.run(["heatmap", "regression"], inputs.feeds())
    batch = collate(
        [Sample(FrameKey("sweep", 0), points, columns, Boxes.empty())], columns=columns, camera_names=()
    )
    with torch.no_grad():
        out = det(batch)
    assert np.abs(heat - out.heatmap.numpy()).max() <= 1e-4
    assert np.abs(reg - out.regression.numpy()).max() <= 1e-4


@pytest.mark.parametrize("ground_window", [0, 5])
def test_height_features_export_matches_torch(ground_window: int) -> None:
    """An encoder with `height_features`: the graph computes each pillar's z extremes and point count
    from the features' z column (two more scatter-maxes, one scatter-add) and agrees with torch; with
    a `ground_window` also the local ground (a min-pool) under the heights and in the z map."""
    import onnxruntime as ort

    from drivetl.data.collate import collate
    from drivetl.data.records import Boxes, FrameKey, Sample
    from drivetl.models import instantiate
    from drivetl.ops._synthetic import waymo_like_points
    from drivetl.workflows._onnx_graph import PillarGraph, plain_detector
    from drivetl.workflows._pillar_input import PillarSpec, make_pillars
    from drivetl.workflows.export_onnx import _export_bytes

    lidar = {
        "voxel_size": [0.4, 0.4, 6.0],
        "point_range": [-12.8, -12.8, -1.0, 12.8, 12.8, 5.0],
        "pfn_channels": [8],
        "widths": [8, 16],
        "depths": [1, 1],
        "strides": [2, 2],
        "out_channels": 8,
        "out_stride": 2,
        "height_features": True,
        "ground_window": ground_window,
    }
    spec = {
        "class_path": "drivetl.models.BEVDetector",
        "init_args": {
            "classes": ["vehicle", "pedestrian"],
            "head_channels": 8,
            "occupancy_head": False,
            "align_head": False,
            "lidar": {"class_path": "drivetl.models.LidarEncoder", "init_args": lidar},
        },
    }
    torch.manual_seed(0)
    det = instantiate(spec).eval()
    columns = ("x", "y", "z", "intensity")
    points = waymo_like_points(20_000, seed=4).numpy()[:, :4]
    lid = det.lidar
    pspec = PillarSpec(lid.grid.voxel_size, lid.grid.point_range, columns, lid.pfn.use_elongation)
    inputs = make_pillars(points, columns, pspec)
    plain, _ = plain_detector(det)
    proto = _export_bytes(PillarGraph(plain).eval(), tuple(torch.from_numpy(a) for a in inputs.arrays()), 18)
    reductions = [a.s for n in proto.graph.node if n.op_type == "ScatterElements" for a in n.attribute]
    assert reductions.count(b"max") == 3 and reductions.count(b"add") >= 1, reductions
    assert any(n.op_type == "MaxPool" for n in proto.graph.node) == bool(ground_window)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    heat, reg = session.run(["heatmap", "regression"], inputs.feeds())
    batch = collate(
        [Sample(FrameKey("f", 0), points, columns, Boxes.empty())], columns=columns, camera_names=()
    )
    with torch.no_grad():
        out = det(batch)
    assert np.abs(heat - out.heatmap.numpy()).max() <= 1e-4
    assert np.abs(reg - out.regression.numpy()).max() <= 1e-4
