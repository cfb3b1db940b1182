"""Hostile logs: a damaged length field in a small log is refused without reserving what it claims."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from drivetl.data.formats.bag import LogSelection, Topic, import_bag, write_log
from drivetl.data.formats.team import TeamReader
from drivetl.errors import DataError


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("container", ["ros1", "mcap-cdr"])
def test_a_length_of_a_gigabyte_in_a_small_log_is_refused_without_reserving_it(sim_team, tmp_path, container):
    """rosbags and mcap read a length from the file and then read that many bytes; Python's
    read(n) reserves n bytes first. The ROS 1 bag's first header length, the MCAP file's first
    summary record length, each set to 1 GiB: one DataError naming the log, a small peak (1 GiB
    before the fix)."""
    sim = TeamReader(sim_team)
    log = tmp_path / ("drive.bag" if container == "ros1" else "drive.mcap")
    info = write_log(log, sim.rig, list(sim), container=container)
    raw = bytearray(log.read_bytes())
    if container == "ros1":
        at = len(b"#ROSBAG V2.0\n")
        raw[at : at + 4] = struct.pack("<I", 1 << 30)
    else:  # the footer (opcode, length, summary start, summary offset start, crc) ends before the magic
        footer = len(raw) - 8 - (1 + 8 + 20)
        at = struct.unpack_from("<Q", raw, footer + 9)[0] + 1  # the summary's first record, after its opcode
        raw[at : at + 8] = struct.pack("<Q", 1 << 30)
    log.write_bytes(bytes(raw))
    sel = LogSelection(Topic(info["lidar_topics"]["TOP"], "TOP"))

    def run():
        with pytest.raises(DataError, match=log.name):
            import_bag(log, tmp_path / "out", sel, rig=sim.rig)

    assert _peak(run) < 64 << 20
