"""Hostile DGP scenes: JSON of the wrong shape, keys that leave the folder; each one error line
naming the file and the key path (the fuzz suite found KeyError, TypeError, AttributeError and
ValueError escaping for these)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivetl.data.formats.dgp import import_dgp
from drivetl.errors import DrivetlError


def _scene(root: Path, files: dict[str, bytes], name: str, edit) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        doc = json.loads(data) if rel == name else None
        (root / rel).write_bytes(json.dumps(edit(doc)).encode() if rel == name else data)
    return root


def _set(path: str, value):
    """An edit setting the value at `path` (dots and [i]) of a document."""

    def edit(doc):
        *parents, last = path.replace("[", ".").replace("]", "").split(".")
        node = doc
        for k in parents:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if value is KeyError:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return doc

    return edit


CASES = {
    "scene_not_an_object": ("scene_1.json", lambda doc: [doc], "a DGP scene must be a JSON object"),
    "datum_without_key": ("scene_1.json", _set("data[0].key", KeyError), r"data\[0\].key is missing"),
    "sensor_name_a_number": ("scene_1.json", _set("data[0].id.name", 3), r"data\[0\].id.name must be"),
    "datums_not_a_list": ("scene_1.json", _set("data", {"a": 1}), "data must be a list"),
    "sample_timestamp_null": (
        "scene_1.json", _set("samples[0].id.timestamp", None), r"samples\[0\].id.timestamp must be a string"
    ),
    "image_width_text": ("scene_1.json", _set("data[1].datum.image.width", "16"), "width must be an int"),
    "calibration_key_out_of_the_folder": (
        "scene_1.json", _set("samples[0].calibration_key", "../../etc/x"), "outside the data folder"
    ),
    "file_name_with_a_nul_byte": (
        "scene_1.json", _set("data[0].datum.point_cloud.filename", "point_cloud/a\x00.npz"), "NUL byte"
    ),
    "focal_length_text": ("calibration/c.json", _set("intrinsics[1].fx", "8"), r"intrinsics\[1\].fx must be"),
    "rotation_missing": ("calibration/c.json", _set("extrinsics[0].rotation", KeyError), "rotation is missi"),
    "ontology_id_a_float": ("ontology/o.json", _set("items[0].id", 0.5), r"items\[0\].id must be an integer"),
    "box_length_null": (
        "bounding_box_3d/LIDAR/1.json", _set("annotations[0].box.length", None),
        r"annotations\[0\].box.length must be a number",
    ),
    "num_points_past_int32": (
        "bounding_box_3d/LIDAR/1.json", _set("annotations[1].num_points", 2**40), "must be an integer"
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_scene_files_are_one_line_naming_file_and_key(case, dgp_scene_files, tmp_path):
    name, edit, match = CASES[case]
    src = _scene(tmp_path / "scene", dgp_scene_files, name, edit)
    with pytest.raises(DrivetlError, match=match) as info:
        import_dgp(src, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert name.split("/")[-1] in str(info.value) or "samples" in match or "NUL" in match, str(info.value)


def test_the_scene_written_here_imports(dgp_scene_files, tmp_path) -> None:
    src = _scene(tmp_path / "scene", dgp_scene_files, "", lambda doc: doc)
    summary = import_dgp(src, tmp_path / "out")
    assert summary["frames"] == 1 and summary["boxes"] == 2
