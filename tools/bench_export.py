"""Benchmark the exported detector: torch eager (CPU) beside onnxruntime (CPU), same process, same frames.

Two LiDAR-only architectures with seeded weights (timing does not depend on training): the demo's
detector (0.4 m pillars over ±25.6 m) and the Waymo-scale one of configs/pretrain/waymo_fusion.yaml
without its camera branch (0.32 m pillars over ±74.88 m, 468 x 468). Frames are seeded Waymo-like
sweeps (`drivetl.ops._synthetic`, 180k points; 30k for the demo grid). Per frame, torch runs the whole
model from canonical points (voxelization through drivetl.ops included); onnxruntime runs the
documented pre-processing (numpy) plus the exported graph. Decoding is left out of both. Prints the
median ms per frame of each, their ratio, the pre-processing's share, the largest difference of
their heatmaps and regression, and ``uptime`` before and after: on a machine shared with other jobs
the figures move with the load.

Memory: the graph takes per-point features and each point's pillar (pre-processing
``drivetl.pillars/2``) and takes the pillar max with a scatter-max, so its intermediates grow with the
points (N x channels), not with pillars x the largest pillar. Each row prints the process's peak
resident memory so far (``ru_maxrss``; the demo row runs first).

Usage: ``python tools/bench_export.py [--frames 3] [--repeats 3] [--threads N] [--only demo|waymo]``.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from drivetl.data.collate import collate
from drivetl.data.records import Boxes, FrameKey, Sample
from drivetl.models import instantiate
from drivetl.ops._synthetic import waymo_like_points
from drivetl.workflows._demo_config import detector_config
from drivetl.workflows._onnx_graph import PillarGraph, plain_detector
from drivetl.workflows._pillar_input import PillarSpec, make_pillars
from drivetl.workflows.export_onnx import _export_bytes

COLUMNS = ("x", "y", "z", "intensity", "elongation")


def waymo_detector() -> dict:
    import yaml

    cfg = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "configs/pretrain/waymo_fusion.yaml").read_text()
    )
    det = copy.deepcopy(cfg["model"]["init_args"]["detector"])
    for key in ("camera", "camera_dropout", "camera_lift_stride"):
        det["init_args"].pop(key, None)
    det["init_args"]["occupancy_head"] = False
    det["init_args"]["align_head"] = False
    return det


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def frames(n: int, points: int, extent: float) -> list[Sample]:
    out = []
    for i in range(n):
        p = waymo_like_points(points, seed=i).numpy()
        p = p[(np.abs(p[:, 0]) < extent) & (np.abs(p[:, 1]) < extent)]
        p = np.column_stack([p, np.zeros(len(p), np.float32)])
        out.append(Sample(FrameKey("bench", i), p, COLUMNS, Boxes.empty()))
    return out


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench(name: str, spec: dict, samples: list[Sample], repeats: int, threads: int | None) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    det = instantiate(spec)
    if det.occupancy_head is not None:
        det.occupancy_head = None
    det.eval()
    plain, _ = plain_detector(det)
    graph = PillarGraph(plain).eval()
    lid = det.lidar
    pspec = PillarSpec(lid.grid.voxel_size, lid.grid.point_range, COLUMNS, lid.pfn.use_elongation)
    first = make_pillars(samples[0].points, COLUMNS, pspec)
    t0 = time.perf_counter()
    proto = _export_bytes(graph, tuple(torch.from_numpy(a) for a in first.arrays()), 18)
    export_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(proto.SerializeToString())
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    batches = [collate([s], image_size=None, columns=COLUMNS, camera_names=()) for s in samples]
    torch_ms, ort_ms, pre_ms, diffs = [], [], [], []
    with torch.inference_mode():
        for s, b in zip(samples, batches, strict=True):
            out = det(b)  # warm-up, and the parity of the two on this frame
            got = session.run(["heatmap", "regression"], make_pillars(s.points, COLUMNS, pspec).feeds())
            diffs += [
                float(np.abs(g - w.numpy()).max())
                for g, w in zip(got, (out.heatmap, out.regression), strict=True)
            ]
            torch_ms.append(median_ms(lambda b=b: det(b), repeats))
            pre_ms.append(median_ms(lambda s=s: make_pillars(s.points, COLUMNS, pspec), repeats))
            ort_ms.append(
                median_ms(
                    lambda s=s: session.run(None, make_pillars(s.points, COLUMNS, pspec).feeds()), repeats
                )
            )
    t, o, p = statistics.median(torch_ms), statistics.median(ort_ms), statistics.median(pre_ms)
    pts = int(np.median([len(s.points) for s in samples]))
    pillars = int(np.median([len(make_pillars(s.points, COLUMNS, pspec).coords) for s in samples]))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    print(
        f"{name:>6}: {pts:,} points/frame, {pillars:,} pillars, grid "
        f"{lid.grid.grid_shape[0]}x{lid.grid.grid_shape[1]} | "
        f"torch eager {t:8.1f} ms | onnxruntime {o:8.1f} ms (pre-processing {p:.1f} ms) | "
        f"torch / onnxruntime {t / o:.2f}x | export {export_s:.1f} s | max |onnx - torch| {max(diffs):.1e} | "
        f"peak RSS so far {peak_mb:,.0f} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: library defaults)")
    ap.add_argument("--only", choices=("demo", "waymo"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"uptime before: {uptime()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "demo"):
        bench("demo", detector_config(), frames(args.frames, 60_000, 25.6), args.repeats, args.threads)
    if args.only in (None, "waymo"):
        bench("waymo", waymo_detector(), frames(args.frames, 180_000, 74.88), args.repeats, args.threads)
    print(f"uptime after:  {uptime()}")


if __name__ == "__main__":
    main()
