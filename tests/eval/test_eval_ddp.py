"""`DetectionEvaluator.sync` under a real 2-process gloo group equals the single-process result."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from drivetl.data.records import CLASSES, Boxes, FrameKey
    from drivetl.eval import DetectionEvaluator, Detections


    def frames(n=9):
        rng = np.random.default_rng(7)
        out = []
        for _ in range(n):
            m = int(rng.integers(0, 8))
            gt = np.c_[rng.uniform(-70, 70, (m, 2)), rng.uniform(0, 2, m), rng.uniform(0.5, 5, (m, 3)),
                       rng.uniform(-3, 3, m)]
            classes = tuple(rng.choice(CLASSES, m))
            boxes = Boxes(gt, classes, num_points=rng.integers(0, 30, m))
            keep = rng.random(m) < 0.8
            pred = gt[keep] + rng.normal(0, 0.15, (int(keep.sum()), 7))
            pred[:, 3:6] = np.abs(pred[:, 3:6])
            k = int(rng.integers(0, 4))
            noise = np.c_[rng.uniform(-70, 70, (k, 2)), rng.uniform(0, 2, k), rng.uniform(0.5, 5, (k, 3)),
                          rng.uniform(-3, 3, k)]
            pred_classes = tuple(c for c, f in zip(classes, keep) if f) + tuple(rng.choice(CLASSES, k))
            # Scores on a coarse grid, so that ties across frames occur.
            scores = np.round(rng.uniform(0, 1, len(pred_classes)), 1)
            out.append((Detections(np.r_[pred, noise], scores, pred_classes), boxes))
        return out


    def worker(rank, world, init_file, out_dir):
        dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
        data = frames()
        # Like DistributedSampler: strided indices, padded with repeats to equal length.
        order = list(range(len(data)))
        order += order[: (-len(order)) % world]
        ev = DetectionEvaluator()
        for i in order[rank::world]:
            ev.update(*data[i], key=FrameKey("seg", i))
        local = len(ev)
        ev.sync()
        ev.sync()  # idempotent
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"local": local, "frames": len(ev), "result": ev.compute().to_dict()}, f)
        dist.destroy_process_group()


    if __name__ == "__main__":
        init_file, out_dir = sys.argv[1], sys.argv[2]
        # fork: the workers reuse this interpreter's imports (spawn would import torch twice more).
        mp.start_processes(worker, args=(2, init_file, out_dir), nprocs=2, join=True, start_method="fork")
        ev = DetectionEvaluator()
        for i, frame in enumerate(frames()):
            ev.update(*frame, key=FrameKey("seg", i))
        with open(f"{out_dir}/single.json", "w") as f:
            json.dump({"frames": len(ev), "result": ev.compute().to_dict()}, f)
    """
)


def _assert_same(a, b, where="result"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, abs_tol=2e-6), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_two_process_gloo_sync_equals_single_process(tmp_path):
    script = tmp_path / "ddp_eval.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "pg_init"), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
    )
    if proc.returncode != 0 and "gloo" in proc.stderr.lower() and "interface" in proc.stderr.lower():
        pytest.skip(f"no usable network interface for gloo: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads((tmp_path / "single.json").read_text())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert single["frames"] == 9
    assert [r["local"] for r in ranks] == [5, 5]  # 9 frames padded to 10, one duplicate
    for r in ranks:
        assert r["frames"] == 9  # the padded duplicate counted once
        _assert_same(r["result"], single["result"])
    assert single["result"]["summary"]["LEVEL_2"]["all"]["map"] is not None
