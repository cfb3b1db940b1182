"""What object paste (`data.paste`, ground-truth sampling) costs per training frame.

Measured in one process, on the same frames of a data folder, in alternating blocks:
  baseline  a training frame as the data module makes it without paste: read, canonicalize, keep
            the point columns, augment;
  ours      the same frame with paste (the bank built once beforehand, from `--bank-frames`
            labeled frames, as a data module builds it), then augmented.
Prints medians per frame (ms), the ratio ours/baseline, the objects per frame before and after
(inside the area), and the load average at the start.

Usage:
  python tools/bench_paste.py --data DEMO/source --format waymo
  python tools/bench_paste.py --data DEMO/fleet --format team --counts vehicle=16 pedestrian=12
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter

from drivetl.data.datamodule import DriveDataModule
from drivetl.data.sampling import SampleIndex

AUGMENT = {"rotation": 0.785, "scale": [0.95, 1.05], "flip_y": 0.5, "translation_std": [0.2, 0.2, 0.1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a data folder (Waymo TFRecords, a team folder, a cache)")
    ap.add_argument("--format", default="auto")
    ap.add_argument("--counts", nargs="+", default=["vehicle=16", "pedestrian=12"], help="class=objects")
    ap.add_argument("--area", type=float, default=25.6, help="half-size of the square area (m)")
    ap.add_argument("--bank-frames", type=int, default=60)
    ap.add_argument("--frames", type=int, default=20, help="frames timed per block")
    ap.add_argument("--blocks", type=int, default=3)
    args = ap.parse_args()
    counts = {k: int(v) for k, v in (c.split("=") for c in args.counts)}
    r = args.area
    paste = {"counts": counts, "bank_frames": args.bank_frames, "area": [-r, -r, r, r]}
    load = os.getloadavg()
    kwargs = dict(root=args.data, format=args.format, classes=list(counts), augment=AUGMENT, val_fraction=0.0)
    plain = DriveDataModule(**kwargs)
    pasted = DriveDataModule(**kwargs, paste=paste)
    plain.setup()
    t = time.perf_counter()
    pasted.setup()
    built = time.perf_counter() - t
    print(f"bank {pasted._bank.counts()} built in {built:.1f} s (with the data module's setup)")
    n = len(plain.train_set)
    picks = [int(i * n / args.frames) for i in range(min(args.frames, n))]
    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    objects: dict[str, Counter] = {"baseline": Counter(), "ours": Counter()}
    config = pasted.paste_config
    for block in range(args.blocks):
        for name, dm in (("baseline", plain), ("ours", pasted)):
            for i in picks:
                t = time.perf_counter()
                sample = dm.train_set[SampleIndex(i, block)]
                times[name].append(time.perf_counter() - t)
                if block == 0:
                    inside = config.inside(sample.boxes.boxes)
                    objects[name].update(c for c, ok in zip(sample.boxes.classes, inside, strict=True) if ok)
    base, ours = (statistics.median(times[k]) * 1e3 for k in ("baseline", "ours"))
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; ", end="")
    print(f"{len(picks)} frames x {args.blocks} blocks")
    for name in ("baseline", "ours"):
        per = {c: round(objects[name][c] / len(picks), 1) for c in counts}
        ms = statistics.median(times[name]) * 1e3
        print(f"  {name:<8} median {ms:6.1f} ms/frame; objects per frame {per}")
    print(f"ratio ours/baseline {ours / base:.2f} (+{ours - base:.1f} ms per frame)")


if __name__ == "__main__":
    main()
