"""The ``--tta`` option of the commands that run a LiDAR detector over frames (`evaluate`,
`predict`, `demo`): its choices are `drivetl.models.tta.TTA_MODES`."""

from __future__ import annotations

import argparse

#: what every ``--tta`` help says of the modes
MODES_TEXT = (
    "flip: also predict each frame mirrored left to right; double_flip (CenterPoint's): also front to "
    "back and both; the output maps are averaged"
)


def add_tta_argument(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    """Add ``--tta`` (default `default`); `what` says what it applies to, for the help."""
    from drivetl.models.tta import TTA_MODES

    parser.add_argument(
        "--tta",
        choices=tuple(TTA_MODES),
        default=default,
        help=f"test-time augmentation of {what} ({MODES_TEXT}; default {default})",
    )
