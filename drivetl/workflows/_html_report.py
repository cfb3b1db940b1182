"""Self-contained HTML reports: one file, images embedded as data URIs, no script, readable offline.

`evaluate_page` writes REPORT_DIR/report.html beside report.md (the same tables, PR curves, per-range
bars, bird's-eye and camera renders); `predict_page` writes OUT/report.html for a prediction folder
(model, data, speed, detections per class, renders). `html_page` is the shared layout.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drivetl._io import atomic_write_text

__all__ = ["evaluate_page", "html_page", "markdown_table_html", "predict_page"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1200px;color:#1b1f24;padding:0 16px}
h1{font-size:24px}h2{font-size:19px;margin-top:28px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}th{background:#f3f5f7}
td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;max-width:560px}
figure img{max-width:100%;border:1px solid #d0d7de}figcaption{font-size:12px;color:#57606a}
.warn{color:#9a6700}ul{font-size:14px}code{font-size:12px;background:#f3f5f7;padding:1px 3px}
"""


def _img(path: Path) -> str:
    kind = "png" if path.suffix.lower() == ".png" else "jpeg"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/{kind};base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_table_html(text: str) -> str:
    """The Markdown tables of `text` (pipe tables, as `comparison_table` writes them) as HTML; other
    lines become paragraphs."""
    parts, rows = [], []
    for line in text.splitlines() + [""]:
        s = line.strip()
        if s.startswith("|"):
            inner = s[1:-1] if s.endswith("|") and not s.endswith("\\|") else s[1:]
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
            continue
        if rows:
            parts.append(_table(rows[0], rows[1:]))
            rows = []
        if s:
            parts.append(f"<p>{html.escape(s)}</p>")
    return "\n".join(parts)


def _figures(items: Sequence[tuple[str, Path]]) -> str:
    figs = [
        f"<figure>{_img(p)}<figcaption>{html.escape(label)}</figcaption></figure>"
        for label, p in items
        if p is not None and Path(p).is_file()
    ]
    return '<div class="grid">' + "".join(figs) + "</div>" if figs else "<p>none</p>"


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A complete page: `title`, then each (heading, inner HTML) section."""
    body = "".join(f"<section><h2>{html.escape(h)}</h2>{inner}</section>" for h, inner in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _list(items: Sequence[str], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def evaluate_page(
    out: Path,
    tables: Sequence[str],
    models: Sequence[Mapping[str, Any]],
    data_info: Mapping[str, Any],
    warnings: Sequence[str],
    figures: Sequence[tuple[str, Path]],
    renders: Sequence[tuple[str, Path]],
    box_errors: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write out/report.html for an evaluation; tables: Markdown as `comparison_table` gives."""
    data = [
        f"data: {data_info.get('root')} ({data_info.get('format')}"
        + (f", split {data_info['split']}" if data_info.get("split") else "")
        + f"), {data_info.get('frames')} frames, rig {data_info.get('rig')}",
        f"matching: {data_info.get('matching')}",
        f"region: {data_info.get('region') or 'every box'}",
    ]
    if data_info.get("tta_views"):
        data.append(f"test-time augmentation: {data_info['tta_views']}")
    sections = [("Data", _list(data)), ("Comparison", "".join(markdown_table_html(t) for t in tables))]
    if box_errors:
        header = ["model", "matched", "centre error m", "size error %", "heading error deg"]
        rows = [
            [n, e["matched"], f"{e['centre_m']:.3f}", f"{e['size_pct']:.1f}", f"{e['heading_deg']:.1f}"]
            for n, e in box_errors.items()
        ]
        sections.append(("Box errors (true positives, LEVEL_2)", _table(header, rows)))
    rows = [
        [m["name"], m["kind"], m["source"], ", ".join(m["classes"]), f"{m.get('seconds', 0):.1f}"]
        for m in models
    ]
    notes = [f"{m['name']}: {n}" for m in models for n in m.get("notes", [])]
    sections.append(
        ("Models", _table(["model", "kind", "source", "classes", "seconds"], rows) + _list(notes))
    )
    if warnings:
        sections.append(("Warnings", _list(list(warnings), "warn")))
    from drivetl.workflows._evaluate_report import skipped_lines

    skipped = skipped_lines(data_info)
    if skipped:
        sections.append(("Skipped frames", f"<p>{html.escape(skipped[0])}</p>" + _list(skipped[1:], "warn")))
    sections.append(("Figures", _figures(figures)))
    sections.append(("Renders (ground truth green, predictions by class)", _figures(renders)))
    path = out / "report.html"
    atomic_write_text(path, html_page("Detection evaluation", sections))
    return path


def predict_page(out: Path, manifest: Mapping[str, Any], summary: Any) -> Path:
    """Write out/report.html for a prediction folder (manifest + `PredictSummary`)."""
    model, data = manifest["model"], manifest["data"]
    facts = [
        ["model", f"{model['name']} ({model['source']})"],
        ["model sha256", model["sha256"][:16]],
        [
            "data",
            f"{data['root']} ({data['format']}"
            + (f", split {data['split']}" if data.get("split") else "")
            + ")",
        ],
        ["frames", data["frames"]],
        ["predicted by this run", summary.predicted],
        ["already there (resumed)", summary.skipped],
        ["frames/s", f"{summary.frames_per_second:.2f}"],
        ["score threshold", manifest["score_threshold"]],
        ["boxes written by this run", summary.detections],
    ]
    per_class = [[c, n] for c, n in sorted(summary.per_class.items())]
    corrupt = list(getattr(summary, "corrupt", []))
    facts.insert(6, ["skipped as unreadable (--skip-corrupt)", len(corrupt)])
    sections = [("Run", _table(["", ""], facts))]
    if corrupt:
        from drivetl.workflows._eval_frames import skipped_summary

        lines = skipped_summary(corrupt, data["frames"])
        sections.append(("Skipped frames", f"<p>{html.escape(lines[0])}</p>" + _list(lines[1:], "warn")))
    sections += [
        ("Detections per class (this run)", _table(["class", "boxes"], per_class)),
        ("Renders (ground truth green where labelled, predictions by class)", _figures(summary.renders)),
    ]
    path = out / "report.html"
    atomic_write_text(path, html_page("Predictions", sections))
    return path
