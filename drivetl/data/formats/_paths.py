"""Paths that a data folder names inside its own files (frame JSON, scene JSON) stay inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivetl.errors import DataError, short_repr


def contained_path(root: Path, value: Any, where: str, what: str) -> Path:
    """`root / value`, refusing a value that is not a relative path inside `root`.

    Absolute paths, '..' components, backslashes and symbolic links that resolve outside `root` are
    refused with a DataError naming `where` (the file that names the path) and `what` (its key).
    """
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: {what} must be a path relative to the folder, got {short_repr(value)}")
    if "\x00" in value:
        raise DataError(f"{where}: {what} {short_repr(value)} holds a NUL byte; it names no file")
    parts = Path(value).parts
    if Path(value).is_absolute() or ".." in parts or "\\" in value:
        raise DataError(
            f"{where}: {what} {short_repr(value)} points outside the data folder; name files relative "
            "to the folder, without '..'"
        )
    path = root / value
    if not path.resolve().is_relative_to(root.resolve()):
        raise DataError(
            f"{where}: {what} {short_repr(value)} resolves outside the data folder (a symbolic link out "
            "of it); copy the file into the folder"
        )
    return path
