"""The HTML report is self-contained and renders in headless Chromium (skipped when Chromium is absent)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from drivetl.workflows._html_report import markdown_table_html

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)


def test_markdown_tables_become_html_tables() -> None:
    text = "Detection metrics:\n\n| model | mAP |\n|---|---:|\n| a \\| b | 0.5 |\n"
    html = markdown_table_html(text)
    assert html.count("<table>") == 1 and "<td>a | b</td>" in html and "---" not in html
    assert "<p>Detection metrics:</p>" in html


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_evaluate_report_renders_tables_and_images_in_chromium(tiny, tmp_path) -> None:
    from PIL import Image

    from drivetl.workflows.evaluate import evaluate

    out = tmp_path / "report"
    evaluate([str(tiny["lidar"])], tiny["data"], out, render_frames=1, score_threshold=0.2, log=None)
    page = out / "report.html"
    text = page.read_text()
    assert not re.search(r'src="(?!data:)', text), "every image is embedded (the page works offline)"
    # the DOM after Chromium parsed and laid the page out: its tables and its decoded images
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-500:]
    assert dom.stdout.count("<table>") >= 3 and dom.stdout.count("<img") >= 4
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()], tmp_path)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-500:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (1600, 1280)
    # not a blank page: text, table borders and coloured figures put many distinct colours on it
    colours = len(np.unique(img.reshape(-1, 3) // 8, axis=0))
    assert colours > 50 and (img.std(axis=(0, 1)) > 10).all()
