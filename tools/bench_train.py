"""Training throughput of a pretraining config on this machine: frames/s, data-wait share, peak memory.

Measured in one process, side by side:
  baseline  model step only (forward + losses + backward + AdamW) on batches collated up front;
  ours      the full pipeline: DataLoader workers reading, canonicalizing, augmenting and collating,
            then the same step. The ratio ours/baseline shows what data loading costs; the share of
            wall time spent waiting for the next batch is printed too.
Peak memory is the process's peak resident set (VmHWM, reset before each phase where the kernel allows).

Usage:
  python tools/bench_train.py                                  # tiny_lidar on seeded synthetic frames
  python tools/bench_train.py --config configs/pretrain/tiny_fusion.yaml --data /path/to/waymo_tfrecords
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from drivetl.data.datamodule import CollateFn, DriveDataModule
from drivetl.models import instantiate
from drivetl.train.losses import total_loss
from drivetl.train.synthetic import synthetic_sample


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class _Synthetic(torch.utils.data.Dataset):
    def __init__(self, n: int, cameras: bool, image_size):
        self.n, self.cameras, self.image_size = n, cameras, image_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return synthetic_sample(
            i,
            extent=24.0,
            num_boxes=10,
            ground_points=20000,
            cameras=self.cameras,
            image_size=tuple(self.image_size) if self.image_size else (48, 64),
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/pretrain/tiny_lidar.yaml")
    ap.add_argument(
        "--data", default=None, help="a data folder (Waymo TFRecords / team / cache); default synthetic"
    )
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    data_args = cfg["data"]["init_args"]
    weights = cfg["model"]["init_args"].get("objectives", {"detection": 1.0})
    mask_ratio = cfg["model"]["init_args"].get("mask_ratio", 0.3) if weights.get("occupancy", 0) > 0 else 0.0
    image_size = data_args.get("image_size")
    columns = tuple(data_args.get("point_columns") or ("x", "y", "z", "intensity"))
    torch.manual_seed(0)
    model = instantiate(cfg["model"]["init_args"]["detector"]).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    if args.data:
        dm = DriveDataModule(
            root=args.data,
            image_size=image_size,
            point_columns=list(columns),
            augment=data_args.get("augment"),
            batch_size=args.batch_size,
            num_workers=args.workers,
            lidars=data_args.get("lidars"),
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
    else:
        ds = _Synthetic(args.batch_size * (args.steps + 2), image_size is not None, image_size)
        fn = CollateFn(
            None if image_size else (),
            tuple(image_size) if image_size else None,
            ("vehicle", "pedestrian", "cyclist", "sign"),
            columns,
        )
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=args.batch_size,
            num_workers=args.workers,
            collate_fn=fn,
            persistent_workers=args.workers > 0,
        )

    def step(batch) -> None:
        out = model(batch, mask_ratio=mask_ratio)
        loss, _ = total_loss(out, batch, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fixed = next(iter(loader))
    step(fixed)  # warm-up (kernel build, allocator)
    _reset_peak()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step(fixed)
        times.append(time.perf_counter() - t)
    base = statistics.median(times)
    base_mem = _peak_rss_mib()

    _reset_peak()
    waits, totals = [], []
    it = iter(loader)
    for _ in range(args.steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        t1 = time.perf_counter()
        step(batch)
        waits.append(t1 - t0)
        totals.append(time.perf_counter() - t0)
    ours = statistics.median(totals)
    ours_mem = _peak_rss_mib()
    b = fixed.batch_size
    print(
        f"config {args.config}  data {'synthetic' if not args.data else args.data}  batch {b}  "
        f"threads {torch.get_num_threads()}  workers {args.workers}  "
        f"points/frame {fixed.points.shape[0] // b}"
    )
    print(
        f"baseline (model step only)  {b / base:7.2f} frames/s  median {base * 1e3:8.1f} ms/step  "
        f"peak RSS {base_mem:7.0f} MiB"
    )
    print(
        f"ours (full data pipeline)   {b / ours:7.2f} frames/s  median {ours * 1e3:8.1f} ms/step  "
        f"peak RSS {ours_mem:7.0f} MiB"
    )
    print(
        f"ratio ours/baseline throughput {base / ours:.2f}; "
        f"waiting on data {sum(waits) / sum(totals):.1%} of wall time"
    )


if __name__ == "__main__":
    main()
