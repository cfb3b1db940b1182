"""Recorded logs: ROS 1 bags, ROS 2 bags (sqlite3 and MCAP storage) and standalone MCAP files.

- `import_bag` streams one LiDAR topic (and camera topics) of a log into a team-format folder;
  `rig_from_log` builds the rig from the log alone (tf, CameraInfo, the sweeps' beams).
- `decode_pointcloud2` turns a PointCloud2 of any field layout into drivetl's point columns.
- `write_log` writes frames as a log (test data, benchmarks).

Read with rosbags (.bag, ROS 2 folders) and mcap (.mcap); no ROS installation is needed.
"""

from drivetl.data.formats.bag._import import import_bag, rig_from_log, segment_name
from drivetl.data.formats.bag._pointcloud2 import DecodedCloud, decode_pointcloud2
from drivetl.data.formats.bag._source import LogReader
from drivetl.data.formats.bag._topics import LogSelection, Topic, parse_topic
from drivetl.data.formats.bag._write import CONTAINERS, write_log

__all__ = [
    "CONTAINERS",
    "DecodedCloud",
    "LogReader",
    "LogSelection",
    "Topic",
    "decode_pointcloud2",
    "import_bag",
    "parse_topic",
    "rig_from_log",
    "segment_name",
    "write_log",
]
