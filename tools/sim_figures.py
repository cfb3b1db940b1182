"""Realism figures and pictures of the simulator, for docs/sim.md.

For each shipped rig: first-return points per frame per laser and labels per frame (mean over a few
segments), and one frame's pictures under docs/sim/: a bird's-eye view of the points with the labels,
and the front camera's image with the LiDAR points projected onto it.

    python tools/sim_figures.py [--segments 3] [--out docs/sim]
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np

from drivetl.calib import load_rig
from drivetl.sim import RigSimulator, SceneCaster, generate_scene

ROOT = Path(__file__).resolve().parents[1]
RIGS = ("waymo_like", "fleet_xt32", "fleet_vlp16")
COLOURS = {"vehicle": "tab:orange", "pedestrian": "tab:red", "cyclist": "tab:purple", "sign": "tab:green"}


def _rig(name: str, camera_width: int):
    rig = load_rig(ROOT / "configs" / "rigs" / f"{name}.yaml")
    cam = rig.cameras[0]
    cam = cam.scaled(camera_width / cam.width, round(camera_width * cam.height / cam.width) / cam.height)
    return dataclasses.replace(rig, cameras=(cam,))


def _bev(frame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    for lp in frame.record.lidars.values():
        p = lp.points[lp.column("return_index") == 0]
        ax.scatter(p[:, 0], p[:, 1], s=0.15, c=np.clip(p[:, 2], -2.5, 4.0), cmap="viridis", linewidths=0)
    b = frame.record.boxes
    for box, cls in zip(b.boxes, b.classes, strict=True):
        x, y, _, length, width, _, h = box
        c, s = np.cos(h), np.sin(h)
        corners = (
            np.array(
                [[length, width], [length, -width], [-length, -width], [-length, width], [length, width]]
            )
            / 2
        )
        xy = corners @ np.array([[c, s], [-s, c]]) + (x, y)
        ax.plot(xy[:, 0], xy[:, 1], color=COLOURS[cls], lw=0.9)
        ax.plot([x, x + c * length / 2], [y, y + s * length / 2], color=COLOURS[cls], lw=0.9)
    ax.set_xlim(-60, 60)
    ax.set_ylim(-60, 60)
    ax.set_aspect("equal")
    ax.set_xlabel("x forward (m)")
    ax.set_ylabel("y left (m)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _overlay(frame, camera, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = frame.record.cameras[camera.name].decode()
    top = frame.record.rig.lidars[0].name
    pts = frame.record.lidars[top].points[:, :3]
    uv, depth, ok = camera.project(pts.astype(np.float64))
    fig, ax = plt.subplots(figsize=(8, 8 * img.shape[0] / img.shape[1]), dpi=110)
    ax.imshow(img)
    ax.scatter(
        uv[ok, 0], uv[ok, 1], s=0.6, c=np.minimum(depth[ok], 60), cmap="turbo", linewidths=0, alpha=0.8
    )
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"quality": 85})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "sim")
    parser.add_argument("--camera-width", type=int, default=960)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scenes = [generate_scene([100, s], "us", duration=1.0) for s in range(args.segments)]
    casters = [SceneCaster(s) for s in scenes]
    print(
        "| rig | laser | first-return points / frame | labels / frame (vehicle, pedestrian, cyclist, sign) |"
    )
    print("|---|---|---|---|")
    for name in RIGS:
        rig = _rig(name, args.camera_width)
        sim = RigSimulator(rig, waymo_layout=name == "waymo_like")
        points: dict[str, list[int]] = {}
        labels: Counter = Counter()
        frames = []
        for caster in casters:
            for i in (0, 5):
                f = sim.render(caster, i, segment="figures", start_us=0)
                frames.append(f)
                for lname, lp in f.record.lidars.items():
                    points.setdefault(lname, []).append(int(np.sum(lp.column("return_index") == 0)))
                labels.update(f.record.boxes.classes)
        n = len(frames)
        per = ", ".join(f"{labels[c] / n:.1f}" for c in ("vehicle", "pedestrian", "cyclist", "sign"))
        for lname, counts in points.items():
            print(f"| {name} | {lname} | {np.mean(counts):,.0f} | {sum(labels.values()) / n:.1f} ({per}) |")
        total = np.mean([sum(len(lp) for lp in f.record.lidars.values()) for f in frames])
        print(f"| {name} | all lasers, both returns | {total:,.0f} | |")
        f = frames[0]
        _bev(f, args.out / f"{name}_bev.png", f"{name}: all lasers, first returns (colour: z), labels")
        _overlay(
            f,
            rig.cameras[0],
            args.out / f"{name}_camera.jpg",
            f"{name} {rig.cameras[0].name} camera + {rig.lidars[0].name} LiDAR (colour: depth)",
        )


if __name__ == "__main__":
    main()
