"""LiDAR beam tables from the vendors' calibration files: Hesai CSV, Velodyne YAML / XML, Ouster JSON.

Each file lists, per laser (channel), its elevation and a small azimuth offset. drivetl's
`LidarModel` holds the inclinations ascending and the azimuth offsets in the same order, measured
counter-clockwise seen from above (from x towards y), so each table is sorted and its azimuths are
turned into that convention:

- Hesai channel CSV (`Channel, Elevation, Azimuth`, degrees): the azimuth is clockwise and added to
  the firing azimuth, so drivetl's offset is -Azimuth;
- Velodyne ROS driver YAML (`lasers: [{laser_id, vert_correction, rot_correction}]`, radians): the
  driver subtracts rot_correction from its clockwise firing azimuth, so the offset is +rot_correction;
- Velodyne db.xml (`<px>` with `<id_>`, `<vertCorrection_>`, `<rotCorrection_>`, degrees; lasers
  disabled in `<enabled_>` are left out): as the YAML;
- Ouster sensor metadata JSON (`beam_altitude_angles`, `beam_azimuth_angles`, degrees): the beam
  azimuth is subtracted from the encoder angle, so the offset is -beam_azimuth_angles.

Ouster files also give the columns per frame (`lidar_mode` "1024x10", or `columns_per_frame`)
and `lidar_to_sensor_transform` (row-major 4x4, translation in millimetres), kept in the table.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivetl.errors import RigError

_MAX_BYTES = 5_000_000


@dataclass(frozen=True)
class VendorTable:
    """A beam table: (H,) inclinations and azimuth offsets in degrees (ascending by inclination).

    vendor: "hesai" | "velodyne" | "ouster"; columns: per frame when the file says (Ouster), else None;
    lidar_to_sensor: (4, 4) metres when the file gives it (Ouster), else None.
    """

    vendor: str
    inclinations_deg: np.ndarray
    azimuth_offsets_deg: np.ndarray
    columns: int | None = None
    lidar_to_sensor: np.ndarray | None = None
    model: str = ""


def _sorted_table(vendor: str, elev: list[float], az: list[float], where: str, **kw: Any) -> VendorTable:
    e, a = np.asarray(elev, dtype=np.float64), np.asarray(az, dtype=np.float64)
    if e.size == 0 or not (np.isfinite(e).all() and np.isfinite(a).all()):
        raise RigError(f"{where}: the beam table is empty or has non-finite angles")
    if np.abs(e).max() > 90:
        raise RigError(f"{where}: elevation {np.abs(e).max():.1f} degrees is outside [-90, 90]")
    order = np.argsort(e, kind="stable")
    steps = np.diff(e[order])
    if steps.size and not np.all(steps > 0):
        dup = e[order][1:][steps <= 0][0]
        raise RigError(f"{where}: two beams share the elevation {dup:.4f} degrees")
    return VendorTable(vendor, e[order], a[order], **kw)


def read_hesai_csv(path: Path) -> VendorTable:
    """Hesai channel table: a header line, then `channel, elevation_deg, azimuth_deg` rows."""
    lines = [ln for ln in _text(path).splitlines() if ln.strip()]
    elev, az = [], []
    for i, line in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in line.split(",")]
        try:
            elev.append(float(cells[1]))
            az.append(-float(cells[2]))
        except (IndexError, ValueError):
            raise RigError(
                f"{path}:{i}: expected 'channel, elevation, azimuth' numbers, got {line[:60]!r}"
            ) from None
    return _sorted_table("hesai", elev, az, str(path), model=f"Hesai ({len(elev)} channels)")


def read_velodyne_yaml(path: Path) -> VendorTable:
    """Velodyne ROS driver calibration YAML: `lasers` with `vert_correction`, `rot_correction` (radians)."""
    from drivetl._io import read_yaml

    doc = read_yaml(_text(path), str(path), RigError)
    lasers = doc.get("lasers") if isinstance(doc, dict) else None
    if not isinstance(lasers, list) or not lasers:
        raise RigError(f"{path}: no 'lasers' list; is this a Velodyne driver calibration file?")
    elev, az = [], []
    for i, laser in enumerate(lasers):
        try:
            elev.append(math.degrees(float(laser["vert_correction"])))
            az.append(math.degrees(float(laser.get("rot_correction", 0.0))))
        except (KeyError, TypeError, ValueError):
            raise RigError(f"{path}: lasers[{i}] needs a numeric vert_correction (radians)") from None
    return _sorted_table("velodyne", elev, az, str(path), model=f"Velodyne ({len(elev)} lasers)")


def read_velodyne_xml(path: Path) -> VendorTable:
    """Velodyne db.xml: `points_` items with `id_`, `vertCorrection_`, `rotCorrection_` (degrees)."""
    import xml.etree.ElementTree as ET

    text = _text(path)
    if "<!ENTITY" in text or "<!DOCTYPE" in text:
        raise RigError(f"{path}: XML with a DOCTYPE or entities is refused; db.xml has neither")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise RigError(f"{path}: not valid XML ({exc})") from None
    elev, az = [], []
    enabled = [
        item.text.strip() != "0"
        for block in root.iter("enabled_")
        for item in block.iter("item")
        if item.text and item.text.strip() in ("0", "1")
    ]
    for i, px in enumerate(root.iter("px")):
        v, r = px.find("vertCorrection_"), px.find("rotCorrection_")
        if v is None or v.text is None:
            raise RigError(f"{path}: points_ item {i} has no vertCorrection_")
        if i < len(enabled) and not enabled[i]:
            continue
        try:
            elev.append(float(v.text))
            az.append(float(r.text) if r is not None and r.text else 0.0)
        except ValueError:
            raise RigError(f"{path}: points_ item {i}: non-numeric correction") from None
    return _sorted_table("velodyne", elev, az, str(path), model=f"Velodyne ({len(elev)} lasers)")


def read_ouster_json(path: Path) -> VendorTable:
    """Ouster sensor metadata (flat legacy layout, or nested `beam_intrinsics` / `lidar_data_format`)."""
    try:
        doc = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise RigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RigError(f"{path}: expected a JSON object")
    beams = doc.get("beam_intrinsics", doc)
    alt, azi = beams.get("beam_altitude_angles"), beams.get("beam_azimuth_angles")
    if not isinstance(alt, list) or not isinstance(azi, list) or len(alt) != len(azi):
        raise RigError(f"{path}: needs beam_altitude_angles and beam_azimuth_angles lists of one length")
    fmt = doc.get("lidar_data_format") or {}
    columns = fmt.get("columns_per_frame")
    mode = (doc.get("config_params") or {}).get("lidar_mode", doc.get("lidar_mode"))
    if columns is None and isinstance(mode, str) and "x" in mode:
        columns = int(mode.split("x")[0])
    l2s = (doc.get("lidar_intrinsics") or doc).get("lidar_to_sensor_transform")
    m = None
    if l2s is not None:
        m = np.asarray(l2s, dtype=np.float64).reshape(4, 4).copy()
        m[:3, 3] /= 1000.0  # millimetres
    info = doc.get("sensor_info") or doc
    model = f"Ouster {info.get('prod_line', '')}".strip()
    try:
        return _sorted_table(
            "ouster",
            [float(v) for v in alt],
            [-float(v) for v in azi],
            str(path),
            columns=int(columns) if columns else None,
            lidar_to_sensor=m,
            model=model,
        )
    except (TypeError, ValueError):
        raise RigError(f"{path}: beam angles must be numbers") from None


def read_vendor_table(path: str | os.PathLike) -> VendorTable:
    """Read a vendor calibration file, choosing the reader by suffix (.csv, .yaml/.yml, .xml, .json)."""
    path = Path(path)
    readers = {
        ".csv": read_hesai_csv,
        ".yaml": read_velodyne_yaml,
        ".yml": read_velodyne_yaml,
        ".xml": read_velodyne_xml,
        ".json": read_ouster_json,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise RigError(
            f"{path}: unknown calibration file type {path.suffix!r}; give a Hesai .csv, a Velodyne .yaml "
            "or .xml, or an Ouster .json"
        )
    return reader(path)


def _text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > _MAX_BYTES:
            raise RigError(f"{path}: {size} bytes is too large for a calibration file")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RigError(f"{path}: cannot read the calibration file ({exc})") from None
