"""rig.yaml entries <-> LidarModel / CameraModel, with errors naming the file and the key.

Every reader function takes `where`, the location of the entry being read ("rig.yaml: lidars[0]"),
and raises RigError("{where}.{key}: what is wrong; what to do").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from drivetl.calib import se3
from drivetl.calib.camera import CameraModel
from drivetl.calib.lidar import IntensityEncoding, LidarModel
from drivetl.errors import RigError, short_repr

LIDAR_KEYS = (
    "name",
    "model",
    "vehicle_from_sensor",
    "beams",
    "azimuth_offsets_deg",
    "columns",
    "azimuth_resolution_deg",
    "max_range",
    "min_range",
    "intensity",
    "returns",
    "spinning",
)
CAMERA_KEYS = (
    "name",
    "width",
    "height",
    "intrinsics",
    "distortion",
    "vehicle_from_sensor",
    "rolling_shutter",
)
ROTATION_KEYS = ("rpy_deg", "quaternion_wxyz", "quaternion_xyzw", "matrix")


def mapping(value: Any, where: str, known: tuple[str, ...] | None = None) -> Mapping[str, Any]:
    """`value` as a mapping; unknown keys (typos) are errors when `known` is given."""
    if not isinstance(value, Mapping):
        raise RigError(f"{where}: expected a mapping, got {type(value).__name__}")
    if known is not None:
        unknown = [k for k in value if k not in known]
        if unknown:
            raise RigError(f"{where}: unknown key {short_repr(unknown[0])} (known keys: {', '.join(known)})")
    return value


def required(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d or d[key] is None:
        raise RigError(f"{where}: missing required key {short_repr(key)}")
    return d[key]


def number(value: Any, where: str, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RigError(f"{where}: expected a number, got {short_repr(value)}")
    x = float(value)
    if not math.isfinite(x):
        raise RigError(f"{where}: must be finite, got {short_repr(value)}")
    if positive and not x > 0:
        raise RigError(f"{where}: must be positive, got {short_repr(value)}")
    if minimum is not None and x < minimum:
        raise RigError(f"{where}: must be >= {minimum:g}, got {short_repr(value)}")
    return x


def integer(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RigError(f"{where}: expected an integer >= {minimum}, got {short_repr(value)}")
    return int(value)


def numbers(value: Any, where: str, length: int | None = None) -> np.ndarray:
    if not isinstance(value, list | tuple) or (length is not None and len(value) != length):
        want = f"a list of {length} numbers" if length is not None else "a list of numbers"
        raise RigError(f"{where}: expected {want}, got {short_repr(value)}")
    return np.array([number(v, f"{where}[{i}]") for i, v in enumerate(value)], dtype=np.float64)


def tidy(x: float, tol: float = 5e-11) -> float:
    """The float with the fewest significant digits within `tol` of `x` (so -17.6, not -17.599999999999998).

    Used when writing angles in degrees: 5e-11 degrees is below 1e-12 radians, so a saved file
    loads back to the same geometry while staying readable and stable under repeated saves.
    """
    for digits in range(1, 17):
        y = float(f"{x:.{digits}g}")
        if abs(y - x) <= tol:
            return y
    return float(x)


# --------------------------------------------------------------------------- transforms
def transform_from_dict(value: Any, where: str) -> np.ndarray:
    """{translation, one of rpy_deg | quaternion_wxyz | quaternion_xyzw} or {matrix: 4x4} -> (4, 4)."""
    d = mapping(value, where, ("translation", *ROTATION_KEYS))
    given = [k for k in ROTATION_KEYS if k in d]
    if len(given) != 1:
        raise RigError(f"{where}: give exactly one of {', '.join(ROTATION_KEYS)} (got {given or 'none'})")
    kind = given[0]
    if kind == "matrix":
        if "translation" in d:
            raise RigError(f"{where}: 'matrix' already holds the translation; remove 'translation'")
        rows = d["matrix"]
        if not isinstance(rows, list | tuple) or len(rows) != 4:
            raise RigError(f"{where}.matrix: expected 4 rows of 4 numbers")
        m = np.stack([numbers(row, f"{where}.matrix[{i}]", 4) for i, row in enumerate(rows)])
        return se3.check_rigid(m, f"{where}.matrix")
    translation = numbers(required(d, "translation", where), f"{where}.translation", 3)
    if kind == "rpy_deg":
        rpy = np.radians(numbers(d[kind], f"{where}.rpy_deg", 3))
        rot = se3.rotation_from_rpy(*rpy)
    else:
        q = numbers(d[kind], f"{where}.{kind}", 4)
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > 1e-3:
            raise RigError(f"{where}.{kind}: quaternion norm is {norm:.4g}, expected 1 (is the order right?)")
        rot = (
            se3.rotation_from_quaternion_wxyz(q)
            if kind == "quaternion_wxyz"
            else se3.rotation_from_quaternion_xyzw(q)
        )
    return se3.check_rigid(se3.make_transform(rot, translation), where)


def transform_to_dict(m: np.ndarray) -> dict[str, Any]:
    """(4, 4) -> {translation, rpy_deg} when that reproduces it to 1e-12, else {matrix}."""
    rpy_deg = [tidy(math.degrees(a)) for a in se3.rpy_from_rotation(m[:3, :3])]
    if np.allclose(se3.rotation_from_rpy(*np.radians(rpy_deg)), m[:3, :3], rtol=0, atol=1e-12):
        return {"translation": [float(x) for x in m[:3, 3]], "rpy_deg": rpy_deg}
    return {"matrix": [[float(x) for x in row] for row in m]}


# --------------------------------------------------------------------------- lidar
def _beams(d: Mapping[str, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (inclinations rad, ascending; the permutation applied to the listed order)."""
    b = mapping(
        required(d, "beams", where), f"{where}.beams", ("inclinations_deg", "count", "min_deg", "max_deg")
    )
    w = f"{where}.beams"
    if "inclinations_deg" in b:
        if any(k in b for k in ("count", "min_deg", "max_deg")):
            raise RigError(f"{w}: give either inclinations_deg or count/min_deg/max_deg, not both")
        inc = numbers(b["inclinations_deg"], f"{w}.inclinations_deg")
        if inc.size == 0:
            raise RigError(f"{w}.inclinations_deg: the list is empty")
        if np.any(np.abs(inc) > 90):
            raise RigError(f"{w}.inclinations_deg: angles must lie in [-90, 90] degrees")
        steps = np.diff(inc)
        if np.all(steps > 0):
            order = np.arange(inc.size)
        elif np.all(steps < 0):
            order = np.arange(inc.size)[::-1]
        else:
            bad = int(np.nonzero(steps <= 0)[0][0] if steps[0] > 0 else np.nonzero(steps >= 0)[0][0]) + 1
            raise RigError(
                f"{w}.inclinations_deg: must be strictly ascending or strictly descending; entry {bad} "
                f"({inc[bad]:g}) breaks the order or repeats a beam"
            )
        return np.radians(inc[order]), order
    count = integer(required(b, "count", w), f"{w}.count")
    lo = number(required(b, "min_deg", w), f"{w}.min_deg")
    hi = number(required(b, "max_deg", w), f"{w}.max_deg")
    if not (-90 <= lo < hi <= 90):
        raise RigError(f"{w}: need -90 <= min_deg < max_deg <= 90, got {lo:g} and {hi:g}")
    return LidarModel.uniform_inclinations(count, math.radians(lo), math.radians(hi)), np.arange(count)


def _columns(d: Mapping[str, Any], where: str) -> int:
    if ("columns" in d) == ("azimuth_resolution_deg" in d):
        raise RigError(f"{where}: give exactly one of 'columns' or 'azimuth_resolution_deg'")
    if "columns" in d:
        return integer(d["columns"], f"{where}.columns")
    res = number(d["azimuth_resolution_deg"], f"{where}.azimuth_resolution_deg", positive=True)
    cols = 360.0 / res
    if abs(cols - round(cols)) > 1e-6 * cols:
        raise RigError(
            f"{where}.azimuth_resolution_deg: 360 / {res:g} = {cols:.4f} is not a whole number of columns; "
            "give 'columns' instead"
        )
    return round(cols)


def _intensity(value: Any, where: str) -> IntensityEncoding:
    d = mapping(value, where, ("encoding", "max", "transform"))
    encoding = required(d, "encoding", where)
    try:
        return IntensityEncoding(
            kind=encoding,
            max_value=number(required(d, "max", where), f"{where}.max", positive=True),
            transform=d.get("transform", "linear"),
        )
    except RigError as exc:
        raise RigError(f"{where}: {exc}") from None


def lidar_from_dict(value: Any, where: str) -> LidarModel:
    d = mapping(value, where, LIDAR_KEYS)
    name = required(d, "name", where)
    if not isinstance(name, str) or not name:
        raise RigError(f"{where}.name: expected a non-empty string, got {short_repr(name)}")
    inclinations, order = _beams(d, where)
    offsets = None
    if d.get("azimuth_offsets_deg") is not None:
        raw = numbers(d["azimuth_offsets_deg"], f"{where}.azimuth_offsets_deg")
        if raw.size != inclinations.size:
            raise RigError(
                f"{where}.azimuth_offsets_deg: {raw.size} values for {inclinations.size} beams; "
                "give one per beam"
            )
        offsets = np.radians(raw[order])
    kwargs = dict(
        name=name,
        model=str(d.get("model", "")),
        vehicle_from_lidar=transform_from_dict(
            required(d, "vehicle_from_sensor", where), f"{where}.vehicle_from_sensor"
        ),
        inclinations=inclinations,
        columns=_columns(d, where),
        max_range=number(required(d, "max_range", where), f"{where}.max_range", positive=True),
        min_range=number(d.get("min_range", 0.0), f"{where}.min_range", minimum=0.0),
        intensity=_intensity(required(d, "intensity", where), f"{where}.intensity"),
        returns=integer(d.get("returns", 1), f"{where}.returns"),
        spinning=bool(d.get("spinning", True)),
        azimuth_offsets=offsets,
    )
    try:
        return LidarModel(**kwargs)
    except RigError as exc:
        raise RigError(f"{where}: {exc}") from None


def lidar_to_dict(lidar: LidarModel) -> dict[str, Any]:
    inc = lidar.inclinations
    out: dict[str, Any] = {
        "name": lidar.name,
        "model": lidar.model,
        "vehicle_from_sensor": transform_to_dict(lidar.vehicle_from_lidar),
    }
    beams: dict[str, Any] = {"inclinations_deg": [tidy(math.degrees(float(x))) for x in inc]}
    if inc.size > 1:
        step = (inc[-1] - inc[0]) / (inc.size - 1)
        lo_deg, hi_deg = tidy(math.degrees(inc[0] - step / 2)), tidy(math.degrees(inc[-1] + step / 2))
        uniform = LidarModel.uniform_inclinations(inc.size, math.radians(lo_deg), math.radians(hi_deg))
        if np.allclose(uniform, inc, rtol=0, atol=1e-12):
            beams = {"count": int(inc.size), "min_deg": lo_deg, "max_deg": hi_deg}
    out["beams"] = beams
    if lidar.azimuth_offsets is not None:
        out["azimuth_offsets_deg"] = [tidy(math.degrees(float(x))) for x in lidar.azimuth_offsets]
    out["columns"] = lidar.columns
    out["max_range"] = lidar.max_range
    out["min_range"] = lidar.min_range
    enc = lidar.intensity
    out["intensity"] = {"encoding": enc.kind, "max": enc.max_value, "transform": enc.transform}
    out["returns"] = lidar.returns
    out["spinning"] = lidar.spinning
    return out


# --------------------------------------------------------------------------- camera
def camera_from_dict(value: Any, where: str) -> CameraModel:
    d = mapping(value, where, CAMERA_KEYS)
    name = required(d, "name", where)
    if not isinstance(name, str) or not name:
        raise RigError(f"{where}.name: expected a non-empty string, got {short_repr(name)}")
    intr = mapping(required(d, "intrinsics", where), f"{where}.intrinsics", ("fx", "fy", "cx", "cy"))
    k = {
        key: number(required(intr, key, f"{where}.intrinsics"), f"{where}.intrinsics.{key}")
        for key in ("fx", "fy", "cx", "cy")
    }
    for key in ("fx", "fy"):
        if k[key] <= 0:
            raise RigError(f"{where}.intrinsics.{key}: focal length must be positive, got {k[key]:g}")
    dist = mapping(d.get("distortion") or {}, f"{where}.distortion", ("k1", "k2", "p1", "p2", "k3"))
    coeffs = {key: number(v, f"{where}.distortion.{key}") for key, v in dist.items()}
    shutter = mapping(d.get("rolling_shutter") or {}, f"{where}.rolling_shutter", ("direction", "readout_s"))
    kwargs = dict(
        name=name,
        width=integer(required(d, "width", where), f"{where}.width"),
        height=integer(required(d, "height", where), f"{where}.height"),
        **k,
        **coeffs,
        vehicle_from_camera=transform_from_dict(
            required(d, "vehicle_from_sensor", where), f"{where}.vehicle_from_sensor"
        ),
        rolling_shutter_direction=str(shutter.get("direction", "GLOBAL_SHUTTER")),
        readout_time_s=number(
            shutter.get("readout_s", 0.0), f"{where}.rolling_shutter.readout_s", minimum=0.0
        ),
    )
    try:
        return CameraModel(**kwargs)
    except RigError as exc:
        raise RigError(f"{where}: {exc}") from None


def camera_to_dict(camera: CameraModel) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": camera.name,
        "width": camera.width,
        "height": camera.height,
        "intrinsics": {"fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy},
        "distortion": dict(zip(("k1", "k2", "p1", "p2", "k3"), camera.distortion, strict=True)),
        "vehicle_from_sensor": transform_to_dict(camera.vehicle_from_camera),
    }
    if camera.rolling_shutter_direction != "GLOBAL_SHUTTER" or camera.readout_time_s:
        out["rolling_shutter"] = {
            "direction": camera.rolling_shutter_direction,
            "readout_s": camera.readout_time_s,
        }
    return out
