"""Error types shared by every drivetl package (a leaf module: imports nothing of drivetl).

Every error a user can cause with bad data, a bad rig, a bad config or a bad checkpoint is a
`DrivetlError`. Its message names the file, the record or key, and what to do. The `drivetl`
command prints it on one line and exits with code 2, without a traceback.
"""

from __future__ import annotations

import reprlib
from typing import Any


class DrivetlError(Exception):
    """Base class of the errors a user can fix (bad input, bad configuration)."""


class RigError(DrivetlError, ValueError):
    """A rig file or calibration is malformed: `"rig.yaml: lidars[0].vehicle_from_sensor: ..."`."""


class DataError(DrivetlError, ValueError):
    """A data file is unreadable, corrupt or inconsistent with its calibration."""


class ConfigError(DrivetlError, ValueError):
    """A training or evaluation configuration is invalid."""


class CheckpointError(DrivetlError, ValueError):
    """A checkpoint does not fit the model it is loaded into."""


class OutputError(DrivetlError, OSError):
    """An output path cannot be written (permissions, a file in the way, a full disk)."""


class BackendUnavailableError(DrivetlError, RuntimeError):
    """An explicitly requested kernel backend cannot be built or loaded on this machine."""


def one_line(exc: BaseException) -> str:
    """The user-facing message of `exc`: for an error re-raised from a DataLoader worker (whose
    message is the worker's whole traceback), the original error's own message."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    lines = text.rstrip().splitlines()
    for k in range(len(lines) - 1, -1, -1):
        head, sep, rest = lines[k].partition(": ")
        if sep and head.startswith("drivetl.errors."):
            message = " ".join([rest, *(line.strip() for line in lines[k + 1 :])]).strip()
            return f"{message} (in a data-loading worker)"
    return lines[-1]


def short_repr(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for error messages (a bad value may be huge).

    Containers are shown a few levels and items deep (`reprlib`), never walked whole: a value built
    from YAML aliases can be far larger expanded than the file it came from.
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 6, 6, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40
