"""Team folders from strangers: named files stay inside the folder, label and pose values are checked.

Each case ends in one DataError naming the frame file and key, from the reader and from `check`'s
validation (which reads through the same reader), and no file outside the folder is ever read.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from drivetl.calib import load_rig
from drivetl.data.formats.team import TeamReader, validate_team_folder
from drivetl.data.formats.team._example import write_example_team
from drivetl.errors import DataError

RIG = Path(__file__).resolve().parents[2] / "configs" / "rigs" / "fleet_xt32.yaml"


@pytest.fixture
def team(tmp_path: Path) -> Path:
    root = tmp_path / "team"
    write_example_team(root, load_rig(RIG), frames=1, seed=0)
    return root


def _edit_frame(root: Path, edit) -> Path:
    frame = next((root / "frames").rglob("*.json"))
    doc = json.loads(frame.read_text())
    edit(doc)
    frame.write_text(json.dumps(doc))
    return frame


def _outside_copy(root: Path) -> Path:
    """A valid point file outside the folder (what an escaping path would read)."""
    inside = next((root / "lidar").rglob("*.pcd"))
    outside = root.parent / ("secret" + inside.suffix)
    outside.write_bytes(inside.read_bytes())
    return outside


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_paths_out_of_the_folder_are_refused(team: Path, kind: str) -> None:
    outside = _outside_copy(team)
    target = os.path.relpath(outside, team) if kind == "dotdot" else str(outside)
    assert (team / target).resolve() == outside.resolve()  # the path would reach the file

    def point_outside(doc):
        next(iter(doc["lidars"].values()))["file"] = target

    frame = _edit_frame(team, point_outside)
    with pytest.raises(DataError, match="points outside the data folder") as info:
        TeamReader(team)[0]
    assert frame.name in str(info.value)
    issues = validate_team_folder(team)
    assert [i.severity for i in issues] == ["error"] and "outside the data folder" in issues[0].message


def test_symlink_out_of_the_folder_is_refused(team: Path) -> None:
    outside = _outside_copy(team)
    link = team / "lidar" / "link.pcd"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(outside)

    def point_at_link(doc):
        next(iter(doc["lidars"].values()))["file"] = "lidar/link.pcd"

    _edit_frame(team, point_at_link)
    with pytest.raises(DataError, match="resolves outside the data folder"):
        TeamReader(team)[0]


def test_camera_path_out_of_the_folder_is_refused(team: Path) -> None:
    def point_outside(doc):
        next(iter(doc["cameras"].values()))["file"] = "../../../../etc/hostname"

    _edit_frame(team, point_outside)
    with pytest.raises(DataError, match=r"cameras\.\w+\.file '\.\./\.\./.*points outside the data folder"):
        TeamReader(team)[0]


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("num_points", "many", r"labels\.objects\[0\]\.num_points: expected a whole number, got 'many'"),
        ("num_points", 2.5, "expected a whole number, got 2.5"),
        ("difficulty", -3, r"difficulty: must be from 0 to 2, got -3"),
        ("num_points", 2.0**64, r"num_points: must be from -1 to 2147483647"),
        ("heading", None, "needs center"),
    ],
)
def test_label_values_are_checked(team: Path, field: str, value, match: str) -> None:
    def edit(doc):
        doc["labels"]["objects"][0][field] = value

    _edit_frame(team, edit)
    with pytest.raises(DataError, match=match):
        TeamReader(team)[0]


def test_nan_pose_is_refused(team: Path) -> None:
    def edit(doc):
        doc["world_from_vehicle"] = [[math.nan] * 4] * 4

    frame = _edit_frame(team, edit)
    assert "NaN" in frame.read_text()
    with pytest.raises(DataError, match="world_from_vehicle has NaN or inf"):
        TeamReader(team)[0]


def test_format_yaml_alias_bomb_is_refused(team: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]" for k in range(1, 9)]
    (team / "format.yaml").write_text("\n".join(lines) + "\nclasses: {Car: vehicle}\n")
    with pytest.raises(DataError, match=r"format\.yaml: expands to more than"):
        TeamReader(team)


@pytest.mark.parametrize("key", ["labels", "lidars", "cameras"])
def test_sections_must_be_objects(team: Path, key: str) -> None:
    def edit(doc):
        doc[key] = [1, 2]

    _edit_frame(team, edit)
    with pytest.raises(DataError, match=rf"{key} must be a JSON object, got \[1, 2\]"):
        TeamReader(team)[0]
    if key == "labels":
        with pytest.raises(DataError, match="labels must be a JSON object"):
            TeamReader(team).check_labels()


def test_a_nul_byte_in_a_file_name_is_refused(team: Path) -> None:
    """A NUL byte in a path the frame file names: Python's path functions raised ValueError."""

    def nul(doc):
        next(iter(doc["lidars"].values()))["file"] = "lidar/TOP/a\x00.pcd"

    frame = _edit_frame(team, nul)
    with pytest.raises(DataError, match="holds a NUL byte") as info:
        TeamReader(team)[0]
    assert frame.name in str(info.value)
