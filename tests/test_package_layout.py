"""The package layout of STYLE.md: import direction between subpackages, and cheap imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "drivetl"

# Which drivetl subpackages each subpackage may import. `errors` and `_io` are leaves shared by all.
ALLOWED: dict[str, set[str]] = {
    "calib": {"calib", "errors"},
    "ops": {"ops", "errors"},
    "data": {"data", "calib", "errors"},
    "sim": {"sim", "calib", "data", "errors"},
    "models": {"models", "calib", "ops", "data", "errors"},
    "train": {"train", "data", "models", "eval", "calib", "ops", "errors"},
    "eval": {"eval", "data", "calib", "errors"},
}
LEAVES = {"errors", "_io"}
for _allowed in ALLOWED.values():
    _allowed |= LEAVES
SUBPACKAGES = sorted(ALLOWED)


def _drivetl_imports(path: Path) -> set[str]:
    """Top-level drivetl subpackages a module imports (anywhere in the file, lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative imports stay inside the module's own subpackage unless they climb out.
                rel = path.relative_to(PKG).parts
                depth = len(rel) - node.level
                base = list(rel[:depth])
                mod = ".".join(["drivetl", *base, *(node.module.split(".") if node.module else [])])
                names = [mod]
            elif node.module:
                names = [node.module]
                if node.module == "drivetl":
                    names = [f"drivetl.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "drivetl" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_import_direction(sub: str) -> None:
    bad: list[str] = []
    for path in sorted((PKG / sub).rglob("*.py")):
        for target in _drivetl_imports(path) - ALLOWED[sub]:
            bad.append(f"{path.relative_to(PKG.parent)} imports drivetl.{target}")
    assert not bad, "import direction violated:\n" + "\n".join(bad)


_HEAVY_CHECK = """
import sys, importlib
importlib.import_module({mod!r})
heavy = [m for m in sys.modules if m.split('.')[0] in ('open3d', 'waymo_open_dataset', 'tensorflow')]
ext = [m for m in sys.modules if m.startswith('drivetl.ops._ext') or m.startswith('drivetl_ops')]
print(repr((heavy, ext)))
"""


@pytest.mark.parametrize("mod", ["drivetl", "drivetl.cli", *[f"drivetl.{s}" for s in SUBPACKAGES]])
def test_fresh_import_is_cheap(mod: str) -> None:
    """Each package imports in a fresh interpreter without open3d, Waymo modules or compiled ops."""
    out = subprocess.run(
        [sys.executable, "-c", _HEAVY_CHECK.format(mod=mod)],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    heavy, ext = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    assert heavy == [], f"import {mod} loaded {heavy}"
    assert ext == [], f"import {mod} loaded compiled ops {ext}"


def test_cli_help_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "drivetl", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "drivetl" in out.stdout
