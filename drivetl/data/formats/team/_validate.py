"""Validation of a team-format folder: every problem as an `Issue`, without stopping at the first."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from drivetl.calib import load_rig
from drivetl.data.formats.team._folder import TeamReader
from drivetl.data.formats.team._layout import frame_file, frame_id, list_frames, load_format, read_splits
from drivetl.errors import DrivetlError


@dataclass(frozen=True)
class Issue:
    """One finding about a data folder: what is wrong, where, and how to fix it.

    severity: "error" (training on this data would be wrong or fail) or "warning".
    """

    severity: Literal["error", "warning"]
    where: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"[{self.severity}] {self.where}: {self.message}.{fix}"


def validate_team_folder(root: str | os.PathLike, max_frames: int | None = None) -> list[Issue]:
    """Check a team-format folder: rig, format file, splits, every frame's files, image sizes, classes.

    Reads up to `max_frames` frames (all when None). Returns the issues found (empty when clean).
    """
    root = Path(root)
    issues: list[Issue] = []
    if not root.is_dir():
        return [
            Issue("error", str(root), "folder not found", "pass the team-format folder (it holds rig.yaml)")
        ]
    rig_path = root / "rig.yaml"
    if not rig_path.is_file():
        return [
            Issue(
                "error",
                str(rig_path),
                "missing",
                "write the rig file (examples in configs/rigs/); `drivetl rig show` validates it",
            )
        ]
    try:
        rig = load_rig(rig_path)
    except DrivetlError as exc:
        return [
            Issue("error", str(rig_path), str(exc), "correct the rig file; `drivetl rig show` validates it")
        ]
    try:
        fmt = load_format(root)
    except DrivetlError as exc:
        return [Issue("error", str(root / "format.yaml"), str(exc), "correct format.yaml")]
    for lidar in rig.lidars:
        if getattr(lidar, "inclinations", None) is None or len(lidar.inclinations) == 0:
            issues.append(
                Issue(
                    "warning",
                    f"{rig_path}: lidars.{lidar.name}",
                    "no beam inclinations",
                    "estimate them with `drivetl rig beams SCAN --write rig.yaml`",
                )
            )
    keys = list_frames(root)
    if not keys:
        issues.append(
            Issue(
                "error",
                str(root / "frames"),
                "no frame files",
                "write frames with TeamWriter or an importer (`drivetl import ...`)",
            )
        )
    try:
        splits = read_splits(root)
    except DrivetlError as exc:
        splits = {}
        issues.append(Issue("error", str(root / "splits"), str(exc), "one 'segment/timestamp_us' per line"))
    listed = set()
    for name, members in splits.items():
        for key in members:
            listed.add(key)
            if not frame_file(root, key).is_file():
                issues.append(
                    Issue(
                        "error",
                        f"splits/{name}.txt",
                        f"frame {frame_id(key)} has no frame file",
                        "re-run the writer (it resumes) or remove the line",
                    )
                )
    unlisted = [k for k in keys if k not in listed]
    if splits and unlisted:
        issues.append(
            Issue(
                "warning",
                str(root / "splits"),
                f"{len(unlisted)} frames are in no split (first: {frame_id(unlisted[0])})",
                "add them to a split file",
            )
        )
    reader = TeamReader(root, keys, rig=rig, fmt=fmt)
    for key in keys[: max_frames if max_frames is not None else len(keys)]:
        where = str(frame_file(root, key).relative_to(root))
        try:
            record = reader.read(key)
        except DrivetlError as exc:
            issues.append(Issue("error", where, str(exc), _fix_for(str(exc))))
            continue
        for name, img in record.cameras.items():
            try:
                width, height = img.size()
                rig.camera(name).check_image_size(width, height, f"{where}: cameras.{name}")
            except DrivetlError as exc:
                issues.append(
                    Issue(
                        "error",
                        where,
                        str(exc),
                        "fix the camera's width/height and intrinsics in "
                        "rig.yaml (use CameraModel.scaled for resized images)",
                    )
                )
            except OSError as exc:
                issues.append(
                    Issue(
                        "error",
                        where,
                        f"cameras.{name}: undecodable image ({exc})",
                        "re-export the image as JPEG or PNG",
                    )
                )
        for name, lp in record.lidars.items():
            if len(lp) == 0:
                issues.append(Issue("warning", where, f"lidars.{name}: no points", "check the LiDAR export"))
    if reader.dropped:
        issues.append(
            Issue(
                "warning",
                str(root / "format.yaml"),
                "labels of dropped classes: "
                + ", ".join(f"{k} x{v}" for k, v in sorted(reader.dropped.items())),
                "map them in format.yaml if they matter",
            )
        )
    return issues


def _fix_for(message: str) -> str:
    if "class" in message:
        return "map the class in format.yaml `classes:` (or null to drop it)"
    if "NaN" in message:
        return "drop invalid returns (NaN/inf) before writing the point file"
    if "not in rig.yaml" in message:
        return "add the sensor to rig.yaml or rename it in the frame file"
    return "re-export the file; the message names what is wrong"
