"""Error types shared by every drivetl package (a leaf module: imports nothing of drivetl).

Every error a user can cause with bad data, a bad rig, a bad config or a bad checkpoint is a
`DrivetlError`. Its message names the file, the record or key, and what to do. The `drivetl`
command prints it on one line and exits with code 2, without a traceback.
"""

from __future__ import annotations


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


class BackendUnavailableError(DrivetlError, RuntimeError):
    """An explicitly requested kernel backend cannot be built or loaded on this machine."""
