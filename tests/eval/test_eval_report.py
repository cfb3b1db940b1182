"""Report helpers: the Markdown comparison table and the figures (written atomically, readable)."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from drivetl.data.records import Boxes
from drivetl.eval import (
    DetectionEvaluator,
    DetectionResult,
    Detections,
    comparison_table,
    write_bev_frame,
    write_pr_curves,
    write_range_bars,
)


def _frame():
    boxes = np.array([
        [10, 0, 0.75, 4, 2, 1.5, 0.0],
        [40, 5, 0.75, 4, 2, 1.5, 1.0],
        [-8, 3, 0.9, 0.8, 0.8, 1.8, 0.0],
    ])
    gt = Boxes(boxes, ("vehicle", "vehicle", "pedestrian"), num_points=[80, 20, 30])
    return boxes, gt


def _results() -> dict[str, DetectionResult]:
    boxes, gt = _frame()
    perfect = DetectionEvaluator()
    perfect.update(Detections(boxes, [0.9, 0.8, 0.7], gt.classes), gt)
    partial = DetectionEvaluator()
    flipped = boxes[:1].copy()
    flipped[:, 6] += np.pi
    partial.update(Detections(flipped, [0.9], ("vehicle",)), gt)
    return {"adapted": perfect.compute(), "source|only": partial.compute()}


def _cells(row: str) -> list[str]:
    """Cells of a Markdown row, splitting on pipes that are not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def test_comparison_table_has_one_row_per_model():
    table = comparison_table(_results())
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    header, rule, *rows = lines
    assert len(rows) == 2
    cols = _cells(header)
    assert cols[:4] == ["model", "frames", "mAP", "mAPH"]
    assert "vehicle AP/APH" in cols and "pedestrian AP/APH" in cols and "cyclist AP/APH" not in cols
    assert cols[-3:] == ["mAP 0-30 m", "mAP 30-50 m", "mAP 50+ m"]
    first = _cells(rows[0])
    assert first[:4] == ["adapted", "1", "1.000", "1.000"]
    assert first[-1] == "n/a"  # nothing beyond 50 m
    second = _cells(rows[1])
    assert second[0] == "source\\|only"  # pipes in names do not break the table
    assert second[cols.index("vehicle AP/APH")] == "0.505 / 0.000"  # 1 of 2 found, heading flipped
    assert all(len(_cells(r)) == len(cols) for r in rows)
    assert "LEVEL_2" in table


def test_figures_are_written_atomically_and_readable(tmp_path):
    results = _results()
    paths = [
        write_pr_curves(results, tmp_path / "pr.png"),
        write_range_bars(results, tmp_path / "bars_vehicle.svg", metric="aph", cls="vehicle"),
    ]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
    with Image.open(tmp_path / "pr.png") as im:
        assert im.width > im.height > 100
    assert (tmp_path / "bars_vehicle.svg").read_text().lstrip().startswith("<?xml")
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(ValueError, match="unsupported figure format"):
        write_range_bars(results, tmp_path / "bars.jpg2")
    assert not (tmp_path / "bars.jpg2").exists()
    # Results read back from JSON keep the plotted curves.
    original = results["source|only"].get("vehicle").curve
    back = DetectionResult.from_dict(results["source|only"].to_dict()).get("vehicle").curve
    grid = np.linspace(0, 1, 11)
    np.testing.assert_allclose(back.interpolated(grid), original.interpolated(grid))
    np.testing.assert_allclose(back.interpolated(grid, heading=True), 0.0)


def test_bev_frame_render(tmp_path):
    boxes, gt = _frame()
    rng = np.random.default_rng(0)
    points = rng.uniform(-30, 30, (500, 4)).astype(np.float32)
    pred = Detections(boxes + [0.5, 0, 0, 0, 0, 0, 0], [0.9, 0.3, 0.6], gt.classes)
    empty = write_bev_frame(tmp_path / "empty.png", Boxes.empty(), extent=50.0)
    full = write_bev_frame(tmp_path / "bev.png", gt, pred, points=points, extent=50.0, score_threshold=0.5)
    with Image.open(empty) as a, Image.open(full) as b:
        pa, pb = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
    assert pa.shape == pb.shape
    green = (pb[..., 1] > 100) & (pb[..., 0] < 80) & (pb[..., 2] < 80)  # ground-truth outlines
    assert green.sum() > 50 and not ((pa[..., 1] > 100) & (pa[..., 0] < 80) & (pa[..., 2] < 80)).any()
    auto = write_bev_frame(tmp_path / "auto.png", gt, pred)  # extent fitted to the boxes
    assert auto.is_file()

    # Which predictions are drawn: the pixels each one changes on its own, against those the
    # thresholded render changes (same title, so only the boxes differ).
    def render(name: str, keep: list[int], threshold: float = 0.0) -> np.ndarray:
        sub = Detections(pred.boxes[keep], pred.scores[keep], [pred.classes[i] for i in keep])
        out = write_bev_frame(tmp_path / f"{name}.png", gt, sub, points=points, extent=50.0,
                              score_threshold=threshold, title="frame")
        with Image.open(out) as im:
            return np.asarray(im.convert("RGB")).astype(int)

    base = render("none", [])
    alone = [np.abs(render(f"only{i}", [i]) - base).sum(-1) > 0 for i in range(3)]
    assert all(mask.sum() > 20 for mask in alone)  # each would be visible in this view
    assert not (alone[0] & alone[2]).any()
    drawn = np.abs(render("thresholded", [0, 1, 2], threshold=0.5) - base).sum(-1) > 0
    np.testing.assert_array_equal(drawn, alone[0] | alone[2])  # the two at or above 0.5, not 0.3
    # Without a threshold the third one is drawn as well.
    everything = np.abs(render("all", [0, 1, 2]) - base).sum(-1) > 0
    np.testing.assert_array_equal(everything, alone[0] | alone[1] | alone[2])


def test_importing_eval_loads_neither_torch_nor_matplotlib():
    code = (
        "import sys, drivetl.eval\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
