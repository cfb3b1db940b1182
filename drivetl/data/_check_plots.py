"""Figures of the `drivetl check` report (matplotlib, Agg backend, imported lazily by the caller)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from drivetl._io import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    _plt().close(fig)
    return path


def overlay(path: Path, image: np.ndarray, uv: np.ndarray, depth: np.ndarray, title: str) -> Path:
    """LiDAR points (uv (N, 2) pixels, depth (N,) metres) drawn over an (H, W, 3) image, coloured by depth."""
    plt = _plt()
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(12, 12 * h / w + 0.6), layout="constrained")
    ax.imshow(image)
    order = np.argsort(-depth)
    sc = ax.scatter(
        uv[order, 0],
        uv[order, 1],
        c=depth[order],
        s=1.5,
        cmap="turbo",
        vmin=0,
        vmax=float(np.percentile(depth, 98)) if len(depth) else 1.0,
        linewidths=0,
    )
    fig.colorbar(sc, ax=ax, fraction=0.02, label="depth (m)")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(title)
    ax.axis("off")
    return _save(fig, path)


def box_corners_xy(boxes: np.ndarray) -> np.ndarray:
    """(M, 4, 2) BEV corners of (M, 7) boxes."""
    out = np.zeros((len(boxes), 4, 2))
    for i, (x, y, _z, length, w, _h, hd) in enumerate(np.asarray(boxes).reshape(-1, 7)):
        c, s = np.cos(hd), np.sin(hd)
        local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, w / 2]
        out[i] = local @ np.array([[c, s], [-s, c]]) + [x, y]
    return out


_CLASS_COLOURS = {
    "vehicle": "tab:red",
    "pedestrian": "tab:green",
    "cyclist": "tab:orange",
    "sign": "tab:purple",
}


def bev(
    path: Path,
    points: np.ndarray,
    boxes: np.ndarray,
    classes: Sequence[str],
    title: str,
    extent: float = 60.0,
) -> Path:
    """Bird's-eye view: (N, >=3) points coloured by height and (M, 7) boxes, vehicle frame."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 9), layout="constrained")
    sel = np.flatnonzero((np.abs(points[:, 0]) < extent) & (np.abs(points[:, 1]) < extent))
    if sel.size > 40000:
        sel = np.random.default_rng(0).choice(sel, 40000, replace=False)
    ax.scatter(
        points[sel, 0], points[sel, 1], c=np.clip(points[sel, 2], -1, 3), s=0.3, cmap="viridis", linewidths=0
    )
    for corners, cls in zip(box_corners_xy(boxes), classes, strict=True):
        poly = np.vstack([corners, corners[:1]])
        ax.plot(poly[:, 0], poly[:, 1], color=_CLASS_COLOURS.get(cls, "black"), lw=1.2)
        front = corners[:2].mean(axis=0)
        ax.plot(
            [corners.mean(axis=0)[0], front[0]],
            [corners.mean(axis=0)[1], front[1]],
            color=_CLASS_COLOURS.get(cls, "black"),
            lw=1.2,
        )
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("x forward (m)")
    ax.set_ylabel("y left (m)")
    ax.set_title(title)
    return _save(fig, path)


def histograms(path: Path, data: Mapping[str, np.ndarray], source: Mapping[str, np.ndarray] | None) -> Path:
    """Histograms of height, range and intensity (canonical), data against source when given."""
    plt = _plt()
    specs = [
        ("height", "height z (m)", (-3, 6)),
        ("range", "range (m)", (0, 100)),
        ("intensity", "canonical intensity", (0, 1)),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    for ax, (key, xlabel, rng) in zip(axes, specs, strict=True):
        bins = np.linspace(*rng, 61)
        for values, label in ((data, "data"), (source, "source")):
            if values is not None and len(values[key]):
                counts, _ = np.histogram(np.clip(values[key], *rng), bins=bins, density=True)
                ax.stairs(counts, bins, fill=True, alpha=0.5, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.legend()
    return _save(fig, path)


def points_per_box(path: Path, rows: Sequence[tuple[str, float, int]]) -> Path:
    """Scatter of points inside each box against its range, one colour per class (log y)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for cls in sorted({r[0] for r in rows}):
        rr = np.array([r[1] for r in rows if r[0] == cls])
        nn = np.array([r[2] for r in rows if r[0] == cls])
        ax.scatter(rr, np.maximum(nn, 0.8), s=10, label=cls, color=_CLASS_COLOURS.get(cls))
    ax.set_yscale("log")
    ax.set_xlabel("box range (m)")
    ax.set_ylabel("LiDAR points in box (0 drawn at 0.8)")
    if rows:
        ax.legend()
    return _save(fig, path)


def box_sizes(path: Path, data: Mapping[str, Mapping], source: Mapping[str, Mapping] | None) -> Path:
    """Mean length / width / height per class, data against source."""
    plt = _plt()
    classes = sorted(set(data) | set(source or {}))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    x = np.arange(len(classes))
    for k, (ax, name) in enumerate(zip(axes, ("length", "width", "height"), strict=True)):
        for off, stats, label in ((-0.2, data, "data"), (0.2, source, "source")):
            if stats is None:
                continue
            vals = [stats[c]["mean"][k] if c in stats else 0.0 for c in classes]
            errs = [stats[c]["std"][k] if c in stats else 0.0 for c in classes]
            ax.bar(x + off, vals, 0.4, yerr=errs, label=label)
        ax.set_xticks(x, classes)
        ax.set_ylabel(f"{name} (m)")
        ax.legend()
    return _save(fig, path)


def write_figures(out: Path, st, src) -> list[Path]:
    """All of the report's figures for DatasetStats `st` (and `src`); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    figs: list[Path] = []
    rec, sample = st.first, st.first_sample
    if rec is not None:
        for cam in sample.cameras:
            img = rec.cameras.get(cam.name)
            if img is None:
                continue
            uv, depth, ok = cam.project(sample.points[:, :3].astype(np.float64))
            uv, depth = np.asarray(uv)[np.asarray(ok)], np.asarray(depth)[np.asarray(ok)]
            title = f"{rec.key} {cam.name}: {len(uv)} LiDAR points on the image (colour = depth)"
            figs.append(overlay(out / f"overlay_{cam.name}.png", img.decode(), uv, depth, title))
        figs.append(
            bev(
                out / "bev.png",
                sample.points,
                sample.boxes.boxes,
                sample.boxes.classes,
                f"{rec.key}: bird's-eye view, canonical frame",
            )
        )
    figs.append(
        histograms(
            out / "histograms.png",
            {"height": st.height, "range": st.range, "intensity": st.intensity},
            None if src is None else {"height": src.height, "range": src.range, "intensity": src.intensity},
        )
    )
    figs.append(points_per_box(out / "points_per_box.png", st.box_rows))
    figs.append(box_sizes(out / "box_sizes.png", st.sizes, None if src is None else src.sizes))
    return figs
