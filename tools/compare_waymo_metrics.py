"""Compare drivetl's AP/APH with Waymo's official detection-metrics op on the same boxes (a one-off check).

Not part of the test suite: the official op needs TensorFlow and the official Waymo wheel, which
drivetl never depends on. Make a throwaway environment for the official side, for example::

    python -m venv /tmp/wodtf
    /tmp/wodtf/bin/pip install tensorflow-cpu==2.13.1 waymo-open-dataset-tf-2-12-0==1.6.7
    python tools/compare_waymo_metrics.py --official-python /tmp/wodtf/bin/python

and run this script with drivetl's own interpreter. It writes seeded comparison sets (ground truth
and predictions), runs this same file under `--official-python` with `--official-worker` (that side
imports only numpy, TensorFlow and the Waymo wheel) to evaluate them with
`py_metrics_ops.detection_metrics`, evaluates the same boxes with `drivetl.eval` in this process
(`EvalConfig.waymo()`), and prints AP and APH side by side for every class, difficulty level and
range band that has ground truth, for Hungarian and score-first matching.

The official configuration is the one of Waymo's evaluation tool: 3D IoU 0.7 (vehicle) / 0.5,
OBJECT_TYPE and RANGE breakdowns at LEVEL_1 and LEVEL_2, score cutoffs 0.00..1.00 in steps of
0.01. As that tool does, ground truth without LiDAR points is left out of the op's input and the
difficulty is LEVEL_2 for 1..5 points or a LEVEL_2 label; drivetl gets every box with its point
count and applies the same rules itself. Boxes and scores are rounded to float32 first, the op's
precision.

Sets: `noisy` (centre/size/heading noise, 20% flipped headings, duplicates, false positives),
`flipped` (half the headings flipped), `crowded` (pedestrians packed so that score-first and
Hungarian matching differ), `empty` (frames with nothing, with ground truth only, with
predictions only), `poor` (a weak detector: large errors, many false positives). Every set has
LEVEL_2 boxes, boxes without points, and objects in every range band and near the band edges.

Variants: "hungarian" (Waymo's default matcher) and "score-first, frames split" decide the
verdict (every |official - drivetl| within 0.005). The op's score-first matcher ranks a
prediction's candidates by the IoU of the boxes at the pair's positions in the class/band/score
subset, read as indices into the frame, so on crowds its result depends on unrelated boxes listed
earlier; "frames split" gives it one class (and band) per frame with predictions by descending
score, where positions and indices coincide. "score-first, frames as given" is printed for
information. The last column is drivetl's default `EvalConfig()` (recall grid, BEV ranges, ...)
on the same matching, for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TOLERANCE = 0.005
#: Waymo's label types, in drivetl's class names.
WAYMO_TYPES = {"vehicle": 1, "pedestrian": 2, "sign": 3, "cyclist": 4}
SIZES = {
    "vehicle": (4.6, 1.95, 1.65),
    "pedestrian": (0.85, 0.75, 1.75),
    "cyclist": (1.8, 0.75, 1.7),
    "sign": (0.35, 0.75, 0.8),
}
Z_CENTRE = {"vehicle": 0.85, "pedestrian": 0.9, "cyclist": 0.85, "sign": 2.2}
BAND_NAMES = ("0-30", "30-50", "50+")
SETS = ("noisy", "flipped", "crowded", "empty", "poor")
SETUP = """The official side needs a throwaway environment with TensorFlow and the Waymo wheel:

    python -m venv /tmp/wodtf
    /tmp/wodtf/bin/pip install tensorflow-cpu==2.13.1 waymo-open-dataset-tf-2-12-0==1.6.7
    python tools/compare_waymo_metrics.py --official-python /tmp/wodtf/bin/python
"""


# ----------------------------------------------------------------------------------------------
# The official side (runs under --official-python; imports nothing of drivetl)


def official_worker(inputs: Path, output: Path) -> None:
    """Evaluate every run in `inputs` (.npz: its boxes and its matcher) with the official op; write
    one JSON row per breakdown."""
    import tensorflow as tf
    from waymo_open_dataset import label_pb2
    from waymo_open_dataset.metrics.ops import py_metrics_ops
    from waymo_open_dataset.protos import breakdown_pb2, metrics_pb2

    data = np.load(inputs)
    runs = json.loads(str(data["runs"]))
    rows = []
    for run in runs:
        name, matcher = run["name"], run["matcher"]
        config = metrics_pb2.Config()
        for generator in (breakdown_pb2.Breakdown.OBJECT_TYPE, breakdown_pb2.Breakdown.RANGE):
            config.breakdown_generator_ids.append(generator)
            levels = config.difficulties.add()
            levels.levels.append(label_pb2.Label.LEVEL_1)
            levels.levels.append(label_pb2.Label.LEVEL_2)
        config.matcher_type = metrics_pb2.MatcherProto.Type.Value(matcher)
        config.iou_thresholds.extend([0.0, 0.7, 0.5, 0.5, 0.5])  # unknown, vehicle, pedestrian, sign, cyclist
        config.box_type = label_pb2.Label.Box.TYPE_3D
        config.score_cutoffs.extend([i * 0.01 for i in range(100)] + [1.0])
        out = py_metrics_ops.detection_metrics(
            prediction_bbox=tf.constant(data[f"{name}/pred_bbox"], tf.float32),
            prediction_type=tf.constant(data[f"{name}/pred_type"], tf.uint8),
            prediction_score=tf.constant(data[f"{name}/pred_score"], tf.float32),
            prediction_frame_id=tf.constant(data[f"{name}/pred_frame"], tf.int64),
            prediction_overlap_nlz=tf.zeros(len(data[f"{name}/pred_score"]), tf.bool),
            ground_truth_bbox=tf.constant(data[f"{name}/gt_bbox"], tf.float32),
            ground_truth_type=tf.constant(data[f"{name}/gt_type"], tf.uint8),
            ground_truth_frame_id=tf.constant(data[f"{name}/gt_frame"], tf.int64),
            ground_truth_difficulty=tf.constant(data[f"{name}/gt_difficulty"], tf.uint8),
            config=config.SerializeToString(),
        )
        # 1.6.7 returns AP, APH, AP longitudinal-affinity weighted, the three PR tensors, breakdowns.
        ap, aph, breakdown = out[0].numpy(), out[1].numpy(), out[-1].numpy()
        for a, h, (generator, shard, level) in zip(ap, aph, breakdown, strict=True):
            gen = breakdown_pb2.Breakdown.GeneratorId.Name(int(generator))
            rows.append({
                "run": name, "generator": gen,
                "type": int(shard) + 1 if gen == "OBJECT_TYPE" else int(shard) // 3 + 1,
                "band": -1 if gen == "OBJECT_TYPE" else int(shard) % 3,
                "level": int(level), "ap": float(a), "aph": float(h),
            })
    output.write_text(json.dumps(rows))


# ----------------------------------------------------------------------------------------------
# Comparison sets


def _place(rng: np.random.Generator, cls: str, n: int) -> np.ndarray:
    """n ground-truth boxes of a class, (n, 7); about one in six sits within 0.3 m of a band edge."""
    rng_m = rng.uniform(3.0, 80.0, n)
    near_edge = rng.random(n) < 0.17
    rng_m[near_edge] = rng.choice([30.0, 50.0], near_edge.sum()) + rng.uniform(-0.3, 0.3, near_edge.sum())
    angle = rng.uniform(-math.pi, math.pi, n)
    size = np.asarray(SIZES[cls]) * rng.uniform(0.85, 1.15, (n, 3))
    z = Z_CENTRE[cls] + rng.normal(0.0, 0.1, n)
    heading = rng.uniform(-math.pi, math.pi, n)
    return np.c_[rng_m * np.cos(angle), rng_m * np.sin(angle), z, size, heading]


def _points(rng: np.random.Generator, n: int) -> np.ndarray:
    """LiDAR point counts: about 8% empty, 20% with 1..5 points (LEVEL_2), the rest 6..800."""
    u = rng.random(n)
    return np.where(u < 0.08, 0, np.where(u < 0.28, rng.integers(1, 6, n), rng.integers(6, 800, n)))


def _detect(rng, gt: np.ndarray, p_detect, centre_sd, size_sd, heading_sd, p_flip, p_dup) -> tuple:
    """Noisy detections of gt (n, 7): boxes (m, 7) and scores (m,) that fall with the error."""
    keep = rng.random(len(gt)) < p_detect
    base = gt[keep]
    boxes = base.copy()
    scale = np.maximum(base[:, 3:4], 0.5)
    boxes[:, :2] += rng.normal(0.0, 1.0, (len(base), 2)) * centre_sd * scale
    boxes[:, 2] += rng.normal(0.0, centre_sd * 0.5, len(base))
    boxes[:, 3:6] *= np.exp(rng.normal(0.0, size_sd, (len(base), 3)))
    flip = np.where(rng.random(len(base)) < p_flip, math.pi, 0.0)
    boxes[:, 6] += rng.normal(0.0, heading_sd, len(base)) + flip
    err = np.hypot(*(boxes[:, :2] - base[:, :2]).T) / scale[:, 0]
    scores = np.clip(0.95 - 2.0 * err + rng.normal(0.0, 0.12, len(base)), 0.02, 1.0)
    dup = rng.random(len(base)) < p_dup
    extra = boxes[dup].copy()
    extra[:, :2] += rng.normal(0.0, 0.3, (len(extra), 2)) * scale[dup]
    return np.r_[boxes, extra], np.r_[scores, scores[dup] * rng.uniform(0.3, 0.9, dup.sum())]


def _false_positives(rng, cls: str, n: int) -> tuple:
    boxes = _place(rng, cls, n)
    return boxes, rng.uniform(0.02, 0.7, n)


def _crowd(rng: np.random.Generator) -> tuple:
    """A line of 3..6 pedestrians 0.2..0.45 m apart, and detections that straddle them.

    Some rows hold the pattern where score-first and Hungarian differ: a confident detection
    between two people (overlapping both) and a weaker one on the second person only.
    """
    n = int(rng.integers(3, 7))
    start = _place(rng, "pedestrian", 1)[0]
    direction = rng.uniform(-math.pi, math.pi)
    steps = np.cumsum(np.r_[0.0, rng.uniform(0.2, 0.45, n - 1)])
    gt = np.repeat(start[None], n, axis=0)
    gt[:, 0] += steps * math.cos(direction)
    gt[:, 1] += steps * math.sin(direction)
    gt[:, 3:6] = np.asarray(SIZES["pedestrian"]) * rng.uniform(0.95, 1.05, (n, 3))
    gt[:, 6] = direction + rng.normal(0.0, 0.3, n)
    preds, scores = [], []
    for i in range(n - 1):
        gap = steps[i + 1] - steps[i]
        if rng.random() < 0.6:  # between i and i+1, nearer i+1; then one on i+1 alone
            a = gt[i + 1].copy()
            a[:2] -= 0.4 * gap * np.array([math.cos(direction), math.sin(direction)])
            b = gt[i + 1].copy()
            b[:2] += 0.6 * gap * np.array([math.cos(direction), math.sin(direction)])
            hi = rng.uniform(0.6, 0.95)
            preds += [a, b]
            scores += [hi, hi * rng.uniform(0.4, 0.95)]
    d, s = _detect(rng, gt, 0.5, 0.12, 0.05, 0.3, 0.2, 0.2)
    boxes = np.r_[np.reshape(preds, (-1, 7)), d]
    return gt, boxes, np.r_[scores, s]


def make_set(name: str, seed: int, frames: int) -> list[dict]:
    """Frames of one set: dicts with gt boxes/classes/points/difficulty and pred boxes/classes/scores."""
    rng = np.random.default_rng(seed)
    counts = {"vehicle": 8, "pedestrian": 6, "cyclist": 2, "sign": 3}
    noise = {
        "noisy": (0.85, 0.05, 0.04, 0.15, 0.2, 0.1),
        "flipped": (0.85, 0.04, 0.03, 0.1, 0.5, 0.05),
        "crowded": (0.85, 0.05, 0.04, 0.15, 0.2, 0.1),
        "empty": (0.8, 0.05, 0.04, 0.15, 0.2, 0.1),
        "poor": (0.7, 0.07, 0.1, 0.4, 0.3, 0.25),
    }[name]
    out = []
    for f in range(frames):
        gt_b, gt_c, pr_b, pr_c, pr_s = [], [], [], [], []
        kind = "full"
        if name == "empty":
            kind = ("nothing", "gt_only", "pred_only", "full")[f % 4]
        for cls, mean in counts.items():
            n = int(rng.poisson(mean))
            gt = _place(rng, cls, n)
            boxes, scores = _detect(rng, gt, *noise)
            n_fp = int(rng.poisson(mean * (0.8 if name == "poor" else 0.3)))
            fp_boxes, fp_scores = _false_positives(rng, cls, n_fp)
            if name == "crowded" and cls == "pedestrian":
                for _ in range(3):
                    cg, cb, cs = _crowd(rng)
                    gt, boxes, scores = np.r_[gt, cg], np.r_[boxes, cb], np.r_[scores, cs]
            if kind in ("full", "gt_only"):
                gt_b.append(gt)
                gt_c += [cls] * len(gt)
            if kind in ("full", "pred_only"):
                pr_b += [boxes, fp_boxes]
                pr_c += [cls] * (len(boxes) + len(fp_boxes))
                pr_s += [scores, fp_scores]
        gt_boxes = np.concatenate(gt_b) if gt_b else np.zeros((0, 7))
        pred_boxes = np.concatenate(pr_b) if pr_b else np.zeros((0, 7))
        scores = np.concatenate(pr_s) if pr_s else np.zeros(0)
        # Some scores on the 0.01 grid, to exercise score == cutoff.
        on_grid = rng.random(scores.size) < 0.2
        scores[on_grid] = np.round(scores[on_grid], 2)
        gt_boxes[:, 6] = np.arctan2(np.sin(gt_boxes[:, 6]), np.cos(gt_boxes[:, 6]))
        pred_boxes[:, 6] = np.arctan2(np.sin(pred_boxes[:, 6]), np.cos(pred_boxes[:, 6]))
        n_gt = len(gt_boxes)
        out.append({
            "gt_boxes": gt_boxes.astype(np.float32).astype(np.float64),
            "gt_classes": tuple(gt_c),
            "gt_points": _points(rng, n_gt),
            "gt_difficulty": np.where(rng.random(n_gt) < 0.05, 2, 0),
            "pred_boxes": pred_boxes.astype(np.float32).astype(np.float64),
            "pred_classes": tuple(pr_c),
            "pred_scores": np.clip(scores, 0.0, 1.0).astype(np.float32).astype(np.float64),
        })
    return out


def _band(boxes: np.ndarray) -> np.ndarray:
    """Waymo's RANGE shard of each box: 0, 1, 2 for [0, 30), [30, 50), [50, inf) m, 3D range."""
    r = np.sqrt((boxes[:, :3].astype(np.float64) ** 2).sum(axis=1))
    return np.searchsorted([30.0, 50.0], r, side="right")


def to_official(frames: list[dict], split: str = "") -> dict[str, np.ndarray]:
    """The op's input tensors; ground truth without points is left out, as Waymo's tool does.

    split "": one op frame per frame. split "class" / "class_band": one op frame per frame and
    class (and range band), predictions in descending score. The op's score-first matcher ranks a
    prediction's candidates by the IoU of the pair at their *positions* in the breakdown subset
    (read as indices into the frame's boxes), which is the right pair only when each subset at
    every cutoff is a prefix of its frame's boxes; these splits make it so.
    """
    pb, pt, ps, pf, gb, gt, gf, gd = [], [], [], [], [], [], [], []
    frame_id = 0
    for fr in frames:
        keep = fr["gt_points"] != 0
        g_boxes = fr["gt_boxes"][keep]
        g_cls = np.asarray(fr["gt_classes"], object)[keep] if keep.size else np.zeros(0, object)
        level2 = (fr["gt_points"][keep] <= 5) | (fr["gt_difficulty"][keep] == 2)
        p_cls = np.asarray(fr["pred_classes"], object)
        p_key = np.zeros(len(p_cls), np.int64)
        g_key = np.zeros(len(g_cls), np.int64)
        if split:
            p_key = np.asarray([WAYMO_TYPES[c] for c in p_cls], np.int64) * 10
            g_key = np.asarray([WAYMO_TYPES[c] for c in g_cls], np.int64) * 10
            if split == "class_band":
                p_key += _band(fr["pred_boxes"])
                g_key += _band(g_boxes)
        for key in np.union1d(p_key, g_key):
            pi = np.flatnonzero(p_key == key)
            pi = pi[np.argsort(-fr["pred_scores"][pi], kind="stable")] if split else pi
            gi = np.flatnonzero(g_key == key)
            pb.append(fr["pred_boxes"][pi])
            pt += [WAYMO_TYPES[c] for c in p_cls[pi]]
            ps.append(fr["pred_scores"][pi])
            pf += [frame_id] * pi.size
            gb.append(g_boxes[gi])
            gt += [WAYMO_TYPES[c] for c in g_cls[gi]]
            gd.append(np.where(level2[gi], 2, 1))
            gf += [frame_id] * gi.size
            frame_id += 1
    return {
        "pred_bbox": np.concatenate(pb or [np.zeros((0, 7))]).astype(np.float32).reshape(-1, 7),
        "pred_type": np.asarray(pt, np.uint8),
        "pred_score": np.concatenate(ps or [np.zeros(0)]).astype(np.float32),
        "pred_frame": np.asarray(pf, np.int64),
        "gt_bbox": np.concatenate(gb or [np.zeros((0, 7))]).astype(np.float32).reshape(-1, 7),
        "gt_type": np.asarray(gt, np.uint8),
        "gt_frame": np.asarray(gf, np.int64),
        "gt_difficulty": np.concatenate(gd or [np.zeros(0)]).astype(np.uint8),
    }


#: Official runs per set: (run suffix, matcher, split).
RUNS = (
    ("hungarian", "TYPE_HUNGARIAN", ""),
    ("score_first", "TYPE_SCORE_FIRST", ""),
    ("score_first_class", "TYPE_SCORE_FIRST", "class"),
    ("score_first_class_band", "TYPE_SCORE_FIRST", "class_band"),
)
#: Compared variants: (label, drivetl matching, official run for "all" rows, run for range rows, in verdict).
VARIANTS = (
    ("hungarian", "hungarian", "hungarian", "hungarian", True),
    ("score-first, frames split", "score_first", "score_first_class", "score_first_class_band", True),
    ("score-first, frames as given", "score_first", "score_first", "score_first", False),
)


# ----------------------------------------------------------------------------------------------
# drivetl's side and the table


def drivetl_results(frames: list[dict], waymo: bool = True, **config) -> object:
    """drivetl's result on the frames: `EvalConfig.waymo(**config)`, or `EvalConfig(**config)`."""
    from drivetl.data.records import Boxes
    from drivetl.eval import DetectionEvaluator, Detections, EvalConfig

    cfg = EvalConfig.waymo(**config) if waymo else EvalConfig(**config)
    ev = DetectionEvaluator(cfg)
    for i, fr in enumerate(frames):
        gt = Boxes(
            fr["gt_boxes"], fr["gt_classes"], num_points=fr["gt_points"], difficulty=fr["gt_difficulty"]
        )
        ev.update(Detections(fr["pred_boxes"], fr["pred_scores"], fr["pred_classes"]), gt, key=i)
    return ev.compute()


def compare(official: list[dict], sets: dict[str, list[dict]]) -> tuple[list[list[str]], float]:
    """Table rows (variants in the verdict) and the largest |official - drivetl| over AP and APH;
    rows of the other variants follow with their own largest difference in the last column."""
    classes = {v: k for k, v in WAYMO_TYPES.items()}
    by_run: dict[tuple, dict] = {}
    for r in official:
        band = "all" if r["band"] < 0 else BAND_NAMES[r["band"]]
        by_run[(r["run"], classes[r["type"]], band, f"LEVEL_{r['level']}")] = r
    rows, worst = [], 0.0
    for label, matching, run_all, run_range, verdict in VARIANTS:
        for name, frames in sets.items():
            ours = drivetl_results(frames, matching=matching)
            defaults = drivetl_results(frames, waymo=False, matching=matching)
            for (cls, band, level), e in ours.entries.items():
                r = by_run.get((f"{name}/{run_all if band == 'all' else run_range}", cls, band, level))
                if r is None or e.num_gt == 0:  # nothing to recall: NaN in drivetl, undefined in the op
                    continue
                d = defaults.get(cls, band, level)
                diff = max(abs(e.ap - r["ap"]), abs(e.aph - r["aph"]))
                if verdict:
                    worst = max(worst, diff)
                rows.append([
                    label, name, cls, band, level, str(e.num_gt),
                    f"{r['ap']:.4f}", f"{e.ap:.4f}", f"{r['aph']:.4f}", f"{e.aph:.4f}", f"{diff:.4f}",
                    f"{d.ap:.4f} / {d.aph:.4f}",
                ])
    return rows, worst


def matcher_gap(official: list[dict], sets: dict[str, list[dict]]) -> str:
    """Where Hungarian and score-first matching differ: AP of both, all ranges, LEVEL_2."""
    lines = [
        "| set | class | AP Hungarian official / drivetl "
        "| AP score-first (frames split) official / drivetl |",
        "|---|---|---:|---:|",
    ]
    classes = {v: k for k, v in WAYMO_TYPES.items()}
    pick = {
        (r["run"], classes[r["type"]]): r["ap"]
        for r in official if r["band"] < 0 and r["level"] == 2
    }
    for name, frames in sets.items():
        hung, first = (drivetl_results(frames, matching=m) for m in ("hungarian", "score_first"))
        for cls in WAYMO_TYPES:
            a, b = hung.get(cls), first.get(cls)
            if a.num_gt and abs(a.ap - b.ap) > 1e-4:
                lines.append(
                    f"| {name} | {cls} | {pick[(f'{name}/hungarian', cls)]:.4f} / {a.ap:.4f} | "
                    f"{pick[(f'{name}/score_first_class', cls)]:.4f} / {b.ap:.4f} |"
                )
    return "\n".join(lines) + "\n"


def markdown(rows: list[list[str]]) -> str:
    header = [
        "matching", "set", "class", "range", "level", "GT", "AP official", "AP drivetl",
        "APH official", "APH drivetl", "max diff", "drivetl defaults AP / APH",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 5 + ["---:"] * 7) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-python", type=Path, help="python of the environment with the official op")
    ap.add_argument("--official-worker", nargs=2, type=Path, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=40, help="frames per comparison set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = ap.parse_args()
    if args.official_worker:
        official_worker(*args.official_worker)
        return 0
    if args.official_python is None:
        print(SETUP)
        return 2
    sets = {name: make_set(name, args.seed * 100 + i, args.frames) for i, name in enumerate(SETS)}
    with tempfile.TemporaryDirectory() as tmp:
        inputs, output = Path(tmp) / "sets.npz", Path(tmp) / "official.json"
        runs, arrays = [], {}
        for name, frames in sets.items():
            for suffix, matcher, split in RUNS:
                runs.append({"name": f"{name}/{suffix}", "matcher": matcher})
                arrays.update({f"{name}/{suffix}/{k}": v for k, v in to_official(frames, split).items()})
        np.savez(inputs, runs=np.asarray(json.dumps(runs)), **arrays)
        run = subprocess.run(
            [str(args.official_python), str(Path(__file__).resolve()),
             "--official-worker", str(inputs), str(output)],
            capture_output=True, text=True,
        )
        if run.returncode != 0 or not output.exists():
            print(run.stderr[-3000:])
            print("The official op did not run.\n\n" + SETUP)
            return 2
        official = json.loads(output.read_text())
    rows, worst = compare(official, sets)
    gap = matcher_gap(official, sets)
    table = markdown(rows) + "\nWhere the matchers differ (all ranges, LEVEL_2):\n\n" + gap
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    ok = worst <= TOLERANCE
    print(f"{len(rows)} entries; largest |official - drivetl| over AP and APH: {worst:.1e} "
          + ("(within 0.005)" if ok else "DIFFERENCES FOUND"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
