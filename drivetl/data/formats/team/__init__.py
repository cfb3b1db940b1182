"""The team format: a folder of rig, per-frame LiDAR files, camera images, labels and splits.

- `TeamWriter` writes it (the simulator and the importers use it); `write_team` writes (record,
  split) pairs in one call.
- `TeamReader` reads it back into `FrameRecord`s (raw intensity as recorded, points in the frame
  each frame file declares, boxes in the vehicle frame); `split(name)` narrows it to one split.
- `validate_team_folder` lists every `Issue` of a folder without stopping at the first.

The layout and the frame-file schema: `drivetl.data.formats.team._layout` and docs/team_format.md.
"""

from drivetl.data.formats.team._folder import TeamReader, TeamWriter, write_team
from drivetl.data.formats.team._layout import TeamFormat
from drivetl.data.formats.team._validate import Issue, validate_team_folder

__all__ = ["Issue", "TeamFormat", "TeamReader", "TeamWriter", "validate_team_folder", "write_team"]
