"""The shape of the DGP JSON files `drivetl.data.formats.dgp` reads, checked before any value is used.

A scene folder comes from another team, so its JSON may hold anything: each check below walks one
file's document and raises one `DataError` naming the file and the key path (``data[1].id.name``)
of the first value that is missing or of the wrong type, quoting at most a short prefix of it. The
reader then indexes the documents without further type checks. Only the fields the reader uses are
checked; others are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from drivetl.errors import DataError, RigError, short_repr

__all__ = ["check_annotations", "check_calibration", "check_ontology", "check_scene"]

_KINDS = {"object": Mapping, "list": list, "string": str}


def _get(doc: Mapping, key: str, kind: str, where: str, at: str, optional: bool = False) -> Any:
    """`doc[key]` checked to be of `kind` (object, list, string, number, integer); `at` is the key path
    of `doc` in its file, for the message. An optional key that is absent gives None."""
    path = f"{at}.{key}" if at else key
    if key not in doc:
        if optional:
            return None
        raise DataError(f"{where}: {path} is missing; is this a DGP file?")
    value = doc[key]
    if kind in _KINDS:
        ok = isinstance(value, _KINDS[kind])
    elif kind == "integer":  # what an int32 holds
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31
    else:  # a finite number
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        article = "an" if kind[0] in "aeiou" else "a"
        raise DataError(f"{where}: {path} must be {article} {kind}, got {short_repr(value)}")
    return value


def _items(doc: Mapping, key: str, where: str, at: str = "", optional: bool = True) -> list:
    """`doc[key]` as a list of objects (absent: [] when optional)."""
    value = _get(doc, key, "list", where, at, optional)
    path = f"{at}.{key}" if at else key
    for i, item in enumerate(value or []):
        if not isinstance(item, Mapping):
            raise DataError(f"{where}: {path}[{i}] must be an object, got {short_repr(item)}")
    return list(value or [])


def _check_pose(pose: Any, where: str, at: str) -> None:
    """A pose object: rotation {qw, qx, qy, qz} and translation {x, y, z}, finite numbers."""
    if not isinstance(pose, Mapping):
        raise DataError(f"{where}: {at} must be an object, got {short_repr(pose)}")
    rotation = _get(pose, "rotation", "object", where, at)
    translation = _get(pose, "translation", "object", where, at)
    for k in ("qw", "qx", "qy", "qz"):
        _get(rotation, k, "number", where, f"{at}.rotation")
    for k in ("x", "y", "z"):
        _get(translation, k, "number", where, f"{at}.translation")


def _pose(doc: Mapping, key: str, where: str, at: str, optional: bool = False) -> None:
    if key in doc or not optional:
        _check_pose(_get(doc, key, "object", where, at), where, f"{at}.{key}" if at else key)


def check_scene(doc: Any, where: str) -> dict:
    """A scene JSON: data (datums: key, id.name, id.timestamp, datum.point_cloud | datum.image),
    samples (id.timestamp, datum_keys, calibration_key), ontologies."""
    if not isinstance(doc, Mapping):
        raise DataError(f"{where}: a DGP scene must be a JSON object, got {short_repr(doc)}")
    for i, d in enumerate(_items(doc, "data", where)):
        at = f"data[{i}]"
        _get(d, "key", "string", where, at)
        _get(_get(d, "id", "object", where, at), "name", "string", where, f"{at}.id")
        datum = _get(d, "datum", "object", where, at)
        if "point_cloud" in datum:
            pc = _get(datum, "point_cloud", "object", where, f"{at}.datum")
            where_pc = f"{at}.datum.point_cloud"
            _get(pc, "filename", "string", where, where_pc)
            fmt = _get(pc, "point_format", "list", where, where_pc, optional=True)
            if fmt is not None and not all(isinstance(c, str) for c in fmt):
                raise DataError(f"{where}: {where_pc}.point_format must be a list of strings")
            annotations = _get(pc, "annotations", "object", where, where_pc, optional=True) or {}
            for k, v in annotations.items():
                if not isinstance(v, str):
                    raise DataError(f"{where}: {where_pc}.annotations.{k} must be a file name")
            _pose(pc, "pose", where, where_pc, optional=True)
        elif "image" in datum:
            img = _get(datum, "image", "object", where, f"{at}.datum")
            _get(img, "filename", "string", where, f"{at}.datum.image")
            for k in ("width", "height"):
                _get(img, k, "integer", where, f"{at}.datum.image")
    for i, s in enumerate(_items(doc, "samples", where)):
        at = f"samples[{i}]"
        _get(_get(s, "id", "object", where, at), "timestamp", "string", where, f"{at}.id")
        _get(s, "calibration_key", "string", where, at)
        keys = _get(s, "datum_keys", "list", where, at, optional=True) or []
        if not all(isinstance(k, str) for k in keys):
            raise DataError(f"{where}: {at}.datum_keys must be a list of strings")
    ontologies = _get(doc, "ontologies", "object", where, "", optional=True) or {}
    if not all(isinstance(v, str) for v in ontologies.values()):
        raise DataError(f"{where}: ontologies must map annotation kinds to ontology file keys (strings)")
    return dict(doc)


def check_calibration(doc: Any, where: str) -> dict:
    """A calibration JSON: names, extrinsics (poses) and intrinsics (fx fy cx cy, skew), one per
    sensor; a `RigError` (the calibration is the rig) naming the file and key otherwise."""
    try:
        return _check_calibration(doc, where)
    except DataError as exc:
        raise RigError(str(exc)) from None


def _check_calibration(doc: Any, where: str) -> dict:
    if not isinstance(doc, Mapping):
        raise DataError(f"{where}: a DGP calibration must be a JSON object, got {short_repr(doc)}")
    names = _get(doc, "names", "list", where, "")
    if not all(isinstance(n, str) for n in names):
        raise DataError(f"{where}: names must be a list of strings")
    extrinsics = _items(doc, "extrinsics", where, optional=False)
    intrinsics = _items(doc, "intrinsics", where, optional=False)
    if not len(names) == len(extrinsics) == len(intrinsics):
        raise DataError(f"{where}: names, extrinsics and intrinsics must have one entry per sensor")
    for i, e in enumerate(extrinsics):
        _check_pose(e, where, f"extrinsics[{i}]")
    for i, intr in enumerate(intrinsics):
        for k in ("fx", "fy", "cx", "cy"):
            _get(intr, k, "number", where, f"intrinsics[{i}]")
        if "skew" in intr:
            _get(intr, "skew", "number", where, f"intrinsics[{i}]")
    return dict(doc)


def check_ontology(doc: Any, where: str) -> dict[int, str]:
    """An ontology JSON -> {class id: class name}."""
    if not isinstance(doc, Mapping):
        raise DataError(f"{where}: a DGP ontology must be a JSON object, got {short_repr(doc)}")
    out = {}
    for i, item in enumerate(_items(doc, "items", where)):
        at = f"items[{i}]"
        out[_get(item, "id", "integer", where, at)] = _get(item, "name", "string", where, at)
    return out


def check_annotations(doc: Any, where: str) -> list:
    """A 3D box annotation JSON -> its annotations (class_id, box.pose, box length/width/height)."""
    if not isinstance(doc, Mapping):
        raise DataError(f"{where}: a DGP annotation file must be a JSON object, got {short_repr(doc)}")
    annotations = _items(doc, "annotations", where)
    for i, ann in enumerate(annotations):
        at = f"annotations[{i}]"
        _get(ann, "class_id", "integer", where, at)
        box = _get(ann, "box", "object", where, at)
        _pose(box, "pose", where, f"{at}.box")
        for k in ("length", "width", "height"):
            _get(box, k, "number", where, f"{at}.box")
        if "num_points" in ann:
            _get(ann, "num_points", "integer", where, at)
        if "instance_id" in ann and not isinstance(ann["instance_id"], str | int):
            raise DataError(f"{where}: {at}.instance_id must be a number or a string")
    return annotations
