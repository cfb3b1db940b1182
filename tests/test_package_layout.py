"""The package layout of STYLE.md: import direction between subpackages, and cheap imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "drivetl"

# Which drivetl subpackages each subpackage may import (docs/architecture.md). `errors` and `_io` are
# leaves shared by all.
ALLOWED: dict[str, set[str]] = {
    "calib": {"calib"},
    "ops": {"ops"},
    "data": {"data", "calib"},
    "sim": {"sim", "calib", "data"},
    "models": {"models", "calib", "ops", "data"},
    "eval": {"eval", "data", "calib"},
    "train": {"train", "data", "models", "eval", "calib", "ops"},
    "workflows": {"workflows", "train", "eval", "models", "sim", "data", "calib", "ops"},
    "commands": {"commands", "workflows", "train", "eval", "models", "sim", "data", "calib", "ops"},
}
LEAVES = {"errors", "_io"}
for _allowed in ALLOWED.values():
    _allowed |= LEAVES
SUBPACKAGES = sorted(ALLOWED)
#: subpackages inside drivetl/data whose modules may not import the rest of their own package
DATA_FORMATS = PKG / "data" / "formats"


def test_every_subpackage_is_covered() -> None:
    """A new folder under drivetl/ gets its row in ALLOWED (and its place in docs/architecture.md)."""
    found = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert found == set(ALLOWED), f"subpackages without an import rule: {sorted(found - set(ALLOWED))}"


def _imported_modules(path: Path) -> set[str]:
    """Dotted drivetl module names a module imports (anywhere in the file, lazy imports included)."""
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
        found.update(n for n in names if n.startswith("drivetl."))
    return found


def _drivetl_imports(path: Path) -> set[str]:
    """Top-level drivetl subpackages a module imports (anywhere in the file, lazy imports included)."""
    return {name.split(".")[1] for name in _imported_modules(path)}


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_import_direction(sub: str) -> None:
    bad: list[str] = []
    for path in sorted((PKG / sub).rglob("*.py")):
        for target in _drivetl_imports(path) - ALLOWED[sub]:
            bad.append(f"{path.relative_to(PKG.parent)} imports drivetl.{target}")
    assert not bad, "import direction violated:\n" + "\n".join(bad)


def test_formats_do_not_import_the_pipeline() -> None:
    """Readers and writers (data/formats) yield records; they never import the sample pipeline."""
    pipeline = {"dataset", "datamodule", "_finetune_frames", "collate", "augment", "check", "synthetic"}
    bad = []
    for path in sorted(DATA_FORMATS.rglob("*.py")):
        for name in _imported_modules(path):
            parts = name.split(".")
            if parts[:2] == ["drivetl", "data"] and len(parts) > 2 and parts[2] in pipeline:
                bad.append(f"{path.relative_to(PKG.parent)} imports {name}")
    assert not bad, "a format imports the pipeline:\n" + "\n".join(bad)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles() -> None:
    """No two drivetl modules import each other, directly or through others, lazy imports included.

    An import of a package counts as an import of its ``__init__``; a module's own package
    ``__init__`` importing it back is the usual re-export and not a cycle.
    """
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imported_modules(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        edges[name] = targets
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


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
