"""Box-error metrics of an evaluation: how far the true positives are from their ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drivetl.eval import box_iou, greedy_match

__all__ = ["box_errors"]


def box_errors(frames: Sequence, config, region: Sequence[float] | None = None) -> dict[str, float]:
    """Mean errors of the true positives of `frames` (`FramePrediction`s) under `config`'s IoU matching.

    Returns ``matched`` (count), ``centre_m`` (3D centre distance, metres), ``size_pct`` (mean of
    |predicted - true| / true over length, width, height, percent) and ``heading_deg`` (absolute
    heading difference, wrapped, degrees); NaN errors when nothing matched."""
    from drivetl.workflows._evaluate_run import in_region

    centre, size, heading = [], [], []
    for f in frames:
        gt = f.ground_truth
        gt_keep = in_region(gt.boxes, region)
        det = f.detections
        det_keep = in_region(det.boxes, region)
        for cls in config.classes:
            g = gt.boxes[gt_keep & (np.asarray(gt.classes) == cls)] if len(gt) else np.zeros((0, 7))
            sel = det_keep & (np.asarray(det.classes, dtype=object) == cls) if len(det) else np.zeros(0, bool)
            p, s = det.boxes[sel], det.scores[sel]
            if not len(g) or not len(p):
                continue
            order = np.argsort(-s, kind="stable")
            p = p[order]
            status, matched = greedy_match(box_iou(p, g, config.iou_type), config.iou_thresholds[cls])
            for i in np.flatnonzero(status == 1):
                a, b = p[i], g[matched[i]]
                centre.append(float(np.linalg.norm(a[:3] - b[:3])))
                size.append(float(np.mean(np.abs(a[3:6] - b[3:6]) / b[3:6])) * 100)
                d = abs(a[6] - b[6]) % (2 * np.pi)
                heading.append(float(np.degrees(min(d, 2 * np.pi - d))))

    def mean(v: list[float]) -> float:
        return float(np.mean(v)) if v else float("nan")

    return {
        "matched": len(centre),
        "centre_m": mean(centre),
        "size_pct": mean(size),
        "heading_deg": mean(heading),
    }
