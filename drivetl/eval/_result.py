"""The outcome of a detection evaluation: AP/APH per class, range band and difficulty level."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivetl._io import atomic_write_text
from drivetl.errors import DataError
from drivetl.eval._ap import PRCurve
from drivetl.eval._config import LEVELS, EvalConfig

#: Recalls at which curves are written to JSON (the interpolated precision is stored there).
CURVE_GRID = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True, eq=False)
class MetricEntry:
    """Metrics of one (class, range band, difficulty level).

    ap, aph: in [0, 1]; NaN when num_gt is 0 (nothing to recall), whatever the predictions.
    num_gt: counted ground truth; num_pred: predictions that count (TP + FP, predictions matched to
    ignored ground truth excluded); num_tp: true positives among them.
    """

    cls: str
    band: str
    level: str
    ap: float
    aph: float
    num_gt: int
    num_pred: int
    num_tp: int
    curve: PRCurve

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.cls,
            "band": self.band,
            "level": self.level,
            "ap": _json_float(self.ap),
            "aph": _json_float(self.aph),
            "num_gt": self.num_gt,
            "num_pred": self.num_pred,
            "num_tp": self.num_tp,
            "curve": {
                "recall": [round(float(r), 6) for r in CURVE_GRID],
                "precision": [round(float(p), 6) for p in self.curve.interpolated(CURVE_GRID)],
                "heading_precision": [
                    round(float(p), 6) for p in self.curve.interpolated(CURVE_GRID, heading=True)
                ],
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricEntry:
        c = d["curve"]
        recall = np.asarray(c["recall"], np.float64)
        curve = PRCurve(
            recall=recall,
            precision=np.asarray(c["precision"], np.float64),
            heading_precision=np.asarray(c["heading_precision"], np.float64),
            scores=np.full(recall.shape, np.nan),
        )
        return cls(
            cls=d["class"], band=d["band"], level=d["level"],
            ap=_float(d["ap"]), aph=_float(d["aph"]),
            num_gt=int(d["num_gt"]), num_pred=int(d["num_pred"]), num_tp=int(d["num_tp"]), curve=curve,
        )


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def _float(x: float | None) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True, eq=False)
class DetectionResult:
    """All metrics of one evaluation, keyed by (class, band, level).

    bands are `config.bands` ("all", "0-30", "30-50", "50+" by default); levels are "LEVEL_1" and
    "LEVEL_2". Means over classes skip classes without ground truth (NaN AP).
    """

    config: EvalConfig
    num_frames: int
    entries: Mapping[tuple[str, str, str], MetricEntry]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def bands(self) -> tuple[str, ...]:
        return self.config.bands

    @property
    def levels(self) -> tuple[str, ...]:
        return LEVELS

    def get(self, cls: str, band: str = "all", level: str = "LEVEL_2") -> MetricEntry:
        """The entry of (cls, band, level); KeyError naming what exists otherwise."""
        try:
            return self.entries[(cls, band, level)]
        except KeyError:
            raise KeyError(
                f"no metrics for class {cls!r}, band {band!r}, level {level!r}: classes {self.classes}, "
                f"bands {self.bands}, levels {self.levels}"
            ) from None

    def ap(self, cls: str, band: str = "all", level: str = "LEVEL_2") -> float:
        return self.get(cls, band, level).ap

    def aph(self, cls: str, band: str = "all", level: str = "LEVEL_2") -> float:
        return self.get(cls, band, level).aph

    def mean(self, metric: str = "ap", band: str = "all", level: str = "LEVEL_2") -> float:
        """Mean of "ap" or "aph" over the classes that have ground truth; NaN when none has."""
        if metric not in ("ap", "aph"):
            raise ValueError(f"metric must be 'ap' or 'aph', got {metric!r}")
        values = [getattr(self.get(c, band, level), metric) for c in self.classes]
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form: config, frame count, means per band and level, every entry.

        NaN (no ground truth) is written as null."""
        summary = {
            level: {
                band: {"map": _json_float(self.mean("ap", band, level)),
                       "maph": _json_float(self.mean("aph", band, level))}
                for band in self.bands
            }
            for level in self.levels
        }
        return {
            "config": self.config.to_dict(),
            "num_frames": self.num_frames,
            "summary": summary,
            "entries": [e.to_dict() for e in self.entries.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectionResult:
        """Inverse of `to_dict` (curves come back sampled on the 101-point recall grid)."""
        entries = [MetricEntry.from_dict(e) for e in data["entries"]]
        return cls(
            config=EvalConfig.from_dict(data["config"]),
            num_frames=int(data["num_frames"]),
            entries={(e.cls, e.band, e.level): e for e in entries},
        )

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write `to_dict()` as JSON to `path` atomically; returns the path."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return Path(path)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> DetectionResult:
        """Read a file written by `save_json`; DataError naming the file when it is not one."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}: not a drivetl metrics file ({type(exc).__name__}: {exc}); "
                "write it with DetectionResult.save_json"
            ) from exc
