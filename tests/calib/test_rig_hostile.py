"""Rig files from strangers: YAML alias bombs, recursive aliases, huge files and huge bad values.

Each must end in one short RigError naming the file, within bounded memory and time, while the
ordinary use of anchors (one camera's intrinsics shared by two cameras) keeps working.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import yaml

from drivetl._io import MAX_YAML_BYTES
from drivetl.calib import load_rig
from drivetl.errors import RigError, short_repr

FLEET = Path(__file__).resolve().parents[2] / "configs" / "rigs" / "fleet_xt32.yaml"


def _laughs(levels: int = 9, fan: int = 10) -> str:
    """A 'billion laughs' document: each anchor is a list of `fan` aliases of the one before it."""
    lines = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    for k in range(1, levels):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def _load_bounded(path: Path) -> tuple[RigError, int]:
    tracemalloc.start()
    try:
        with pytest.raises(RigError) as info:
            load_rig(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return info.value, peak


def test_alias_bomb_in_a_value_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    rig = yaml.safe_load(FLEET.read_text())
    text = _laughs() + yaml.safe_dump(rig, sort_keys=False).replace(
        "max_range: 120.0", "max_range: *a8", 1
    )
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    assert len(text) < 8000
    err, peak = _load_bounded(path)
    assert str(path) in str(err) and "expands to more than" in str(err)
    assert len(str(err)) < 300
    assert peak < 64 << 20  # the expanded value (10^9 integers) is never built


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text("name: loop\nlidars: &l [*l]\n")
    with pytest.raises(RigError, match="refers to itself"):
        load_rig(path)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text("# " + "x" * MAX_YAML_BYTES + "\nname: big\n")
    with pytest.raises(RigError, match="a YAML file here is at most"):
        load_rig(path)


def test_error_quotes_a_short_prefix_of_a_bad_value(tmp_path: Path) -> None:
    rig = yaml.safe_load(FLEET.read_text())
    rig["lidars"][0]["max_range"] = "far" * 100_000
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig))
    with pytest.raises(RigError, match=r"lidars\[0\]\.max_range: expected a number, got 'farfar") as info:
        load_rig(path)
    assert len(str(info.value)) < 300


def test_shared_anchors_still_load(tmp_path: Path) -> None:
    rig = yaml.safe_load(FLEET.read_text())
    second = dict(rig["cameras"][0], name="FRONT_2")  # shares the first camera's nested values
    rig["cameras"].append(second)
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False))  # shared values become &id001 / *id001
    assert "&id" in path.read_text()
    loaded = load_rig(path)
    assert [c.name for c in loaded.cameras] == ["FRONT", "FRONT_2"]
    assert loaded.cameras[1].width == loaded.cameras[0].width


def test_short_repr_never_walks_a_whole_container() -> None:
    big: list = [1]
    for _ in range(40):
        big = [big] * 10  # 10^40 leaves if walked
    assert len(short_repr(big)) <= 80
    assert short_repr([1, 2.5]) == "[1, 2.5]"
