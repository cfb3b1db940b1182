"""Decoding an exported detector's maps into boxes with numpy alone: peaks, box coding, rotated NMS.

The same maths as the torch decode (`drivetl.models.decode`, `drivetl.models.heads.BoxCoding`,
`drivetl.models.heads.rotated_nms`), written again in numpy so that the ONNX runner
(`drivetl.workflows._onnx_runner`) needs onnxruntime and numpy only. Everything it needs travels in
the ONNX file's ``postprocess`` metadata (version ``drivetl.decode/2``; ``/1`` files, which have no IoU
channel, decode the same way), read by `Postprocess.from_dict`:

1. scores: ``sigmoid(heatmap)`` (float32); peaks: cells equal to the max of their 3x3 neighbourhood
   (borders padded with -inf), other cells score 0;
2. the ``top_k`` best scores over all classes and cells (ties: lower class, then lower cell first);
3. boxes from the regression at those cells: ``x = (ix + dx) * cell_x + x_min``, ``y`` alike, ``z``
   as regressed; sizes ``exp(min(log_size [+ log prior of the class], 6))`` metres; heading
   ``atan2(sin, cos)``, or with the direction classifier the axis ``atan2(sin 2θ, cos 2θ) / 2`` turned
   by pi when the front logit disagrees with ``cos(axis - direction_axis) > 0``, wrapped to (-pi, pi];
4. boxes scoring under the score threshold are dropped; per class, greedy NMS on the bird's-eye
   rotated IoU (``> nms_iou`` suppresses); the kept boxes of all classes sorted by score, at most
   ``max_detections``.

With an IoU-score channel (the last one; ``coding.iou``), the scores of step 3 are rectified before
step 4: ``score^(1 - iou_alpha) * sigmoid(iou_logit)^iou_alpha`` (peaks and top-k use the heatmap).

The torch and numpy paths agree to float32 rounding (tests/workflows/test_onnx_decode.py); boxes
with exactly equal scores may come out in another order (torch leaves ties unspecified).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivetl.errors import CheckpointError

DECODE = "drivetl.decode/2"
#: versions this decode reads (/1: the same without the IoU-score channel)
_READS = ("drivetl.decode/1", DECODE)

__all__ = [
    "DECODE",
    "NumpyDetections",
    "Postprocess",
    "decode_maps",
    "rotated_iou_bev_np",
    "rotated_nms_np",
]

_EPS = np.float32(1e-6)


@dataclass(frozen=True)
class Postprocess:
    """Decoding parameters and box coding (see the module docstring).

    geometry: x_min, y_min, cell_x, cell_y (metres), height, width (cells) of the maps;
    log_priors: (K, 3) float32 log metres per class, or None; direction: sin/cos of twice the heading
    plus a front logit channel; direction_axis: radians; iou: a last channel rectifies the scores with
    exponent iou_alpha."""

    x_min: float
    y_min: float
    cell_x: float
    cell_y: float
    height: int
    width: int
    log_priors: np.ndarray | None = None
    direction: bool = False
    direction_axis: float = math.pi / 4
    top_k: int = 200
    nms_iou: float = 0.2
    max_detections: int = 100
    iou: bool = False
    iou_alpha: float = 0.5

    @property
    def channels(self) -> int:
        """Regression channels the coding expects: 8, plus the direction logit, plus the IoU logit."""
        return 8 + int(self.direction) + int(self.iou)

    @staticmethod
    def from_dict(
        postprocess: Mapping[str, Any], bev: Mapping[str, Any], where: str = "ONNX metadata"
    ) -> Postprocess:
        """From the metadata's ``postprocess`` and ``grid.bev``; CheckpointError naming `where` when
        a field is missing."""
        if postprocess.get("version") not in _READS:
            raise CheckpointError(
                f"{where}: post-processing {str(postprocess.get('version'))[:40]!r}; this drivetl decodes "
                f"{DECODE} (export the model again with `drivetl export onnx`)"
            )
        try:
            coding = postprocess["coding"]
            priors = coding.get("size_priors")
            log_priors = None
            if priors is not None:
                log_priors = np.log(np.asarray(priors, np.float32).reshape(-1, 3))
            return Postprocess(
                float(bev["x_min"]),
                float(bev["y_min"]),
                float(bev["cell_x"]),
                float(bev["cell_y"]),
                int(bev["height"]),
                int(bev["width"]),
                log_priors,
                bool(coding["direction"]),
                float(coding["direction_axis"]),
                int(postprocess["top_k"]),
                float(postprocess["nms_iou"]),
                int(postprocess["max_detections"]),
                bool(coding.get("iou", False)),
                float(coding.get("iou_alpha", 0.5)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{where}: post-processing metadata is incomplete ({type(exc).__name__}: {str(exc)[:60]}); "
                "export the model again with `drivetl export onnx`"
            ) from None


@dataclass(frozen=True)
class NumpyDetections:
    """Boxes of one frame: boxes (D, 7) float32 x, y, z, l, w, h, heading (canonical vehicle frame,
    metres, radians), scores (D,) float32 best first, labels (D,) int64 class index."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32)


def _max_pool3(x: np.ndarray) -> np.ndarray:
    """3x3 max with stride 1 over the last two axes, -inf padding (the same shape back)."""
    h, w = x.shape[-2:]
    pad = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    out = pad[..., 0:h, 0:w].copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, pad[..., dy : dy + h, dx : dx + w], out=out)
    return out


def _sizes_headings(reg: np.ndarray, labels: np.ndarray, post: Postprocess) -> tuple[np.ndarray, np.ndarray]:
    """reg (C, N) at N cells, labels (N,) -> sizes (3, N) metres and headings (N,) in (-pi, pi]."""
    log_size = reg[3:6]
    if post.log_priors is not None:
        log_size = log_size + post.log_priors[labels].T
    size = np.exp(np.minimum(log_size, np.float32(6.0)))
    if not post.direction:
        return size, np.arctan2(reg[6], reg[7])
    axis = np.float32(0.5) * np.arctan2(reg[6], reg[7])
    points_front = np.cos(axis - np.float32(post.direction_axis)) > 0
    heading = np.where(points_front == (reg[8] > 0), axis, axis + np.float32(math.pi))
    pi, two_pi = np.float32(math.pi), np.float32(2 * math.pi)
    heading = np.mod(heading + pi, two_pi) - pi
    return size, np.where(heading <= -pi, heading + two_pi, heading).astype(np.float32)


def decode_maps(
    heatmap: np.ndarray, regression: np.ndarray, post: Postprocess, score_threshold: float
) -> list[NumpyDetections]:
    """Heatmap logits (B, K, H, W) + regression (B, C, H, W) float32 -> one `NumpyDetections` per frame."""
    heatmap = np.asarray(heatmap, np.float32)
    regression = np.asarray(regression, np.float32)
    b, k, h, w = heatmap.shape
    c = regression.shape[1]
    if c != post.channels or regression.shape[0] != b or regression.shape[2:] != (h, w):
        raise ValueError(
            f"regression {regression.shape} does not fit heatmap {heatmap.shape} and the box coding "
            f"({post.channels} channels)"
        )
    heat = _sigmoid(heatmap)
    heat = np.where(heat == _max_pool3(heat), heat, np.float32(0.0))
    n = min(post.top_k, k * h * w)
    out = []
    for i in range(b):
        flat = heat[i].reshape(-1)
        cand = np.argpartition(-flat, n - 1)[:n] if n < flat.size else np.arange(flat.size)
        order = cand[np.lexsort((cand, -flat[cand]))]
        scores = flat[order]
        labels = (order // (h * w)).astype(np.int64)
        cell = order % (h * w)
        iy, ix = (cell // w).astype(np.float32), (cell % w).astype(np.float32)
        reg = regression[i].reshape(c, h * w)[:, cell]
        x = (ix + reg[0]) * np.float32(post.cell_x) + np.float32(post.x_min)
        y = (iy + reg[1]) * np.float32(post.cell_y) + np.float32(post.y_min)
        size, heading = _sizes_headings(reg, labels, post)
        if post.iou:
            iou = _sigmoid(reg[c - 1])
            a = np.float32(post.iou_alpha)
            scores = (np.maximum(scores, 0) ** (1 - a) * iou**a).astype(np.float32)
        boxes = np.concatenate([x[None], y[None], reg[2:3], size, heading[None]], 0).T.astype(np.float32)
        keep = scores >= np.float32(score_threshold)
        bx, sc, lb = boxes[keep], scores[keep], labels[keep]
        kept = [
            idx[rotated_nms_np(bx[idx], sc[idx], post.nms_iou)]
            for idx in (np.flatnonzero(lb == cls) for cls in np.unique(lb))
        ]
        sel = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        sel = sel[np.argsort(-sc[sel], kind="stable")][: post.max_detections]
        out.append(NumpyDetections(bx[sel], sc[sel], lb[sel]))
    return out


def _corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) boxes -> (N, 4, 2) bird's-eye corners, counter-clockwise."""
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    d = np.stack([c, s], -1) * (boxes[:, 3:4] / 2)
    n = np.stack([-s, c], -1) * (boxes[:, 4:5] / 2)
    ctr = boxes[:, :2]
    return np.stack([ctr + d + n, ctr - d + n, ctr - d - n, ctr + d - n], 1)


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """points (N, M, 4, 2), boxes (M, 7) -> (N, M, 4) bool: inside box m (edges included, 1e-5 slack)."""
    rel = points - boxes[None, :, None, :2]
    c, s = np.cos(boxes[:, 6])[None, :, None], np.sin(boxes[:, 6])[None, :, None]
    along = rel[..., 0] * c + rel[..., 1] * s
    across = -rel[..., 0] * s + rel[..., 1] * c
    tol = np.float32(1e-5)
    return (np.abs(along) <= boxes[None, :, None, 3] / 2 + tol) & (
        np.abs(across) <= boxes[None, :, None, 4] / 2 + tol
    )


def rotated_iou_bev_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise bird's-eye IoU of rotated boxes: a (N, 7), b (M, 7) -> (N, M) in [0, 1].

    The intersection polygon's vertices are the corners of each box inside the other and the edge
    crossings; ordered by angle around their centroid, the shoelace formula gives its area."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return np.zeros((n, m), np.float32)
    ca, cb = _corners(a), _corners(b)
    a_in_b = _inside(np.broadcast_to(ca[:, None], (n, m, 4, 2)), b)
    b_in_a = _inside(np.broadcast_to(cb[None], (n, m, 4, 2)).transpose(1, 0, 2, 3), a).transpose(1, 0, 2)
    p = ca[:, None, :, None, :]
    r = (np.roll(ca, -1, 1) - ca)[:, None, :, None, :]
    q = cb[None, :, None, :, :]
    t = (np.roll(cb, -1, 1) - cb)[None, :, None, :, :]
    cross = r[..., 0] * t[..., 1] - r[..., 1] * t[..., 0]  # (N, M, 4, 4)
    qp = q - p
    safe = np.where(np.abs(cross) < _EPS, np.float32(1.0), cross)
    u_a = (qp[..., 0] * t[..., 1] - qp[..., 1] * t[..., 0]) / safe
    u_b = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / safe
    hit = (np.abs(cross) >= _EPS) & (u_a >= 0) & (u_a <= 1) & (u_b >= 0) & (u_b <= 1)
    crossing = (p + u_a[..., None] * r).reshape(n, m, 16, 2)
    pts = np.concatenate(
        [np.broadcast_to(ca[:, None], (n, m, 4, 2)), np.broadcast_to(cb[None], (n, m, 4, 2)), crossing], 2
    )
    valid = np.concatenate([a_in_b, b_in_a, hit.reshape(n, m, 16)], 2)  # (N, M, 24)
    cnt = np.maximum(valid.sum(-1, keepdims=True), 1).astype(np.float32)
    centroid = (pts * valid[..., None]).sum(2) / cnt
    rel = pts - centroid[:, :, None]
    ang = np.where(valid, np.arctan2(rel[..., 1], rel[..., 0]), np.float32(10.0))
    order = np.argsort(ang, -1, kind="stable")
    pts = np.take_along_axis(pts, order[..., None], 2)
    valid = np.take_along_axis(valid, order, 2)
    pts = np.where(valid[..., None], pts, pts[:, :, :1])  # the invalid tail collapses onto the first vertex
    nxt = np.roll(pts, -1, 2)
    area = np.float32(0.5) * np.abs((pts[..., 0] * nxt[..., 1] - pts[..., 1] * nxt[..., 0]).sum(-1))
    area = np.where(valid.sum(-1) >= 3, area, np.float32(0.0))
    area_a = (a[:, 3] * a[:, 4])[:, None]
    area_b = (b[:, 3] * b[:, 4])[None, :]
    union = np.maximum(area_a + area_b - area, _EPS)
    return np.clip(area / union, 0.0, 1.0).astype(np.float32)


def rotated_nms_np(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on bird's-eye rotated IoU: (N, 7) boxes, (N,) scores -> kept indices (int64), best first
    (equal scores: lower index first)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    over = rotated_iou_bev_np(boxes[order], boxes[order]) > iou_threshold
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[np.asarray(keep, np.int64)]
