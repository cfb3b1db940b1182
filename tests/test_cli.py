"""The `drivetl` command's error contract: one line on stderr, exit code 2, checked before work starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drivetl.cli import main
from drivetl.errors import DataError, one_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """An output path under a file, so no folder can be made there."""
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / "out"


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--rig", str(ROOT / "configs/rigs/fleet_xt32.yaml"), "--frames", "1", "--out", "{out}"],
        ["import", "kitti", "{tmp}", "{out}"],
        ["check", "{tmp}", "--out", "{out}"],
        ["evaluate", "--ckpt", "{tmp}/x.ckpt", "--data", "{tmp}", "--out", "{out}"],
        ["predict", "--ckpt", "{tmp}/x.ckpt", "--data", "{tmp}", "--out", "{out}"],
        ["convert", "waymo", "{tmp}", "{out}"],
        ["demo", "--out", "{out}"],
    ],
    ids=lambda a: a[0],
)
def test_unwritable_output_fails_first_with_one_line(argv, blocked: Path, tmp_path: Path, capsys) -> None:
    argv = [a.format(out=blocked, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a file is in the way" in err and str(tmp_path / "afile") in err, err
    assert not list(tmp_path.glob("afile/*"))


def test_os_errors_mid_run_are_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    import drivetl.commands.info as info

    def full_disk(args):
        raise OSError(28, "No space left on device", str(tmp_path / "shard-00001.partial"))

    monkeypatch.setattr(info, "run", full_disk)
    assert main(["info", str(tmp_path / "x.tfrecord")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"drivetl info: error: {tmp_path / 'shard-00001.partial'}: No space left on device; check the path, "
        "its permissions and the free space\n"
    )


class _Bad(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        raise DataError(f"frames/seg/{i}.json: labels.objects[0]: center/size/heading must be finite")


def test_a_data_workers_error_is_reported_as_its_own_message() -> None:
    loader = torch.utils.data.DataLoader(_Bad(), batch_size=1, num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)  # what torch hands back: the worker's whole traceback
    assert one_line(info.value) == (
        "frames/seg/0.json: labels.objects[0]: center/size/heading must be finite (in a data-loading worker)"
    )
    assert one_line(DataError("plain message")) == "plain message"


class _Buggy(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        return {"frame": i}["frames"]  # a bug, not bad input


def test_a_bug_in_a_data_worker_is_one_line_with_exit_code_1(monkeypatch, tmp_path: Path, capsys) -> None:
    import drivetl.commands.info as info

    def run(args):
        next(iter(torch.utils.data.DataLoader(_Buggy(), batch_size=1, num_workers=1)))

    monkeypatch.setattr(info, "run", run)
    assert main(["info", str(tmp_path / "x.tfrecord")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("drivetl info: internal error in a data-loading worker: KeyError: 'frames'")
    assert "--workers 0" in err
