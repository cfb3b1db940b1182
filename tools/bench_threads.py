"""What `--cpu_threads auto` buys a CPU training run whose loader workers are busy all the time.

Measured in one process, on the same data folder and model, in alternating blocks of training steps
(loader workers making batches: read, canonicalize, paste, augment, collate; then forward, losses,
backward and an AdamW step):
  baseline  torch's default intra-op threads (one per core);
  ours      `drivetl.train.cli.training_threads` of the loader workers (``--cpu_threads auto``).
The model and data are the demo's pretraining (`drivetl.workflows._demo_config.pretrain_config`,
object paste included) unless `--config` names another pretraining config. Each block starts a fresh
loader and skips its first `--warmup` steps. Prints the median seconds per step of each, the ratio
baseline/ours and the load average at the start.

With `--compare-blas` both run ``--cpu_threads auto`` and differ in the loader workers instead:
  baseline  numpy's BLAS at its default (one thread per core) in each worker;
  ours      `drivetl.data.dataset.worker_init`: numpy's BLAS on one thread in each worker (torch's
            own pool is on one thread there already).

With `--compare-precision` both run ``--cpu_threads auto`` with the workers' BLAS on one thread:
  baseline  float32 (``trainer.precision: 32-true``);
  ours      bf16 autocast on the CPU (``trainer.precision: bf16-mixed``), which pays where the CPU
            has bf16 matrix instructions (AMX, AVX512-BF16).

Usage:
  python tools/bench_threads.py --data DEMO/source            # a finished demo's source folder
  python tools/bench_threads.py --data DEMO/source --workers 1 --compare-blas
  python tools/bench_threads.py --data DEMO/fleet --config DEMO/configs/adapt.yaml
  python tools/bench_threads.py --data DEMO/source --workers 1 --compare-precision
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import yaml

from drivetl.train.cli import training_threads
from drivetl.train.losses import total_loss


def _modules(args):
    """(model, data module) of the config, data from `args.data`, `args.workers` loader workers."""
    from drivetl.data.datamodule import DriveDataModule, FinetuneDataModule
    from drivetl.train import PretrainModule
    from drivetl.train.finetune import FinetuneModule

    if args.config:
        cfg = yaml.safe_load(Path(args.config).read_text())
    else:
        from drivetl.workflows import _demo_config

        cfg = _demo_config.pretrain_config(Path("bench"), Path(args.data), 1, 4, args.workers, 0)
    data = dict(cfg["data"]["init_args"], root=str(args.data), num_workers=args.workers)
    model_args = dict(cfg["model"]["init_args"])
    if "FinetuneModule" in cfg["model"]["class_path"]:
        module = FinetuneModule(**model_args)
        dm = FinetuneDataModule(model_spec=module.batch_spec, **data)
    else:
        module = PretrainModule(**model_args)
        dm = DriveDataModule(**data)
    dm.setup("fit")
    weights = getattr(module.hparams, "objectives", None) or {"detection": 1.0}
    return module, dm, dict(weights)


def _block(
    module, dm, weights, opt, threads: int, steps: int, warmup: int, blas_one: bool = True,
    bf16: bool = False,
) -> list[float]:
    """Seconds of each timed training step with `threads` torch threads (a fresh loader; `blas_one`:
    its workers run numpy's BLAS on one thread, as the data modules' loaders do; `bf16`: forward and
    losses under bf16 autocast)."""
    from torch.utils.data import DataLoader

    torch.set_num_threads(threads)
    module.train()
    times: list[float] = []
    loader = dm.train_dataloader()
    for one in loader.values() if isinstance(loader, dict) else [loader]:
        if isinstance(one, DataLoader) and not blas_one:
            one.worker_init_fn = None

    def batches():  # epochs back to back (a few labeled frames make an epoch of one batch)
        while True:
            yield from loader

    it = batches()
    start = time.perf_counter()
    for i in range(warmup + steps):
        batch = next(it)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = module(batch)
            loss, _ = total_loss(outputs, batch, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        now = time.perf_counter()
        if i >= warmup:
            times.append(now - start)
        start = now
    it.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the training data folder")
    ap.add_argument("--config", default=None, help="a pretraining or fine-tuning YAML (default: the demo's)")
    ap.add_argument("--workers", type=int, default=2, help="loader workers")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per block")
    ap.add_argument("--warmup", type=int, default=4, help="untimed steps at the start of each block")
    ap.add_argument("--blocks", type=int, default=3, help="blocks of each (alternating)")
    ap.add_argument(
        "--compare-blas", action="store_true",
        help="baseline: the workers' BLAS at its default threads; ours: on one thread (both auto threads)",
    )
    ap.add_argument(
        "--compare-precision", action="store_true",
        help="baseline: float32; ours: bf16 autocast (both auto threads, the workers' BLAS on one thread)",
    )
    args = ap.parse_args()
    load = os.getloadavg()
    default = torch.get_num_threads()
    auto = training_threads(args.workers)
    module, dm, weights = _modules(args)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; "
        f"{args.workers} loader workers; threads: baseline {default}, auto {auto}"
    )
    if args.compare_blas:
        plans = {"baseline": (auto, False, False), "ours": (auto, True, False)}
        what = {"baseline": "workers' BLAS at its default threads", "ours": "workers' BLAS on one thread"}
    elif args.compare_precision:
        plans = {"baseline": (auto, True, False), "ours": (auto, True, True)}
        what = {"baseline": "float32", "ours": "bf16 autocast"}
    else:
        plans = {"baseline": (default, True, False), "ours": (auto, True, False)}
        what = {"baseline": f"{default} threads", "ours": f"{auto} threads, --cpu_threads auto"}
    runs: dict[str, list[float]] = {"baseline": [], "ours": []}
    for b in range(args.blocks):
        for name, (threads, blas_one, bf16) in plans.items():
            t = _block(module, dm, weights, opt, threads, args.steps, args.warmup, blas_one, bf16)
            runs[name] += t
            print(f"  block {b + 1} {name:<8} ({what[name]}): median {statistics.median(t):.3f} s/step")
    torch.set_num_threads(default)
    base, ours = statistics.median(runs["baseline"]), statistics.median(runs["ours"])
    print(
        f"baseline {base:.3f} s/step ({what['baseline']}), ours {ours:.3f} s/step ({what['ours']}): "
        f"{base / ours:.2f}x"
    )


if __name__ == "__main__":
    main()
