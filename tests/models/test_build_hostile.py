"""A detector config stored in a checkpoint is data: nothing outside the allow-list is built or run.

Checkpoints and adapter files are shared between teams. A weights-only checkpoint whose stored
detector config names a callable (a file writer, the CLI itself) must be refused before anything
is imported or constructed, by `instantiate` and by every command that rebuilds a detector.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from drivetl.calib import load_rig
from drivetl.cli import main
from drivetl.data.formats.team._example import write_example_team
from drivetl.errors import ConfigError
from drivetl.models import LidarEncoder, instantiate
from drivetl.models.build import COMPONENTS, validate

LIDAR = {
    "class_path": "drivetl.models.LidarEncoder",
    "init_args": {"voxel_size": [0.4, 0.4, 6.0], "point_range": [-25.6, -25.6, -2.0, 25.6, 25.6, 4.0]},
}


def _writer(target: Path) -> dict:
    args = {"path": str(target), "text": "owned"}
    return {"class_path": "drivetl._io.atomic_write_text", "init_args": args}


def _detector(lidar: dict) -> dict:
    return {"class_path": "drivetl.models.BEVDetector", "init_args": {"classes": ["vehicle"], "lidar": lidar}}


def test_callables_outside_the_allow_list_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    for spec in (_writer(target), _detector(_writer(target)),
                 {"class_path": "drivetl.cli.main", "init_args": {"argv": ["info", str(target)]}},
                 {"class_path": "os.system", "init_args": {"command": f"touch {target}"}}):
        with pytest.raises(ConfigError, match="not a detector component"):
            instantiate(spec, "ckpt: detector")
    assert not target.exists()


def test_whole_config_validated_before_anything_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    original = LidarEncoder.__init__

    @functools.wraps(original)  # keeps the signature the validation reads
    def spy(self, *args, **kwargs):
        built.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(LidarEncoder, "__init__", spy)
    spec = _detector(LIDAR)
    spec["init_args"]["camera"] = {"class_path": "drivetl.models.CameraEncoder", "init_args": {"bogus": 1}}
    message = (r"detector\.camera: cannot build .*unknown init_args 'bogus' "
               r"\(it takes backbone, heights, out_channels\)")
    with pytest.raises(ConfigError, match=message):
        instantiate(spec, "detector")
    assert built == []  # the LiDAR encoder (built first) was never constructed


def _nested(depth: int) -> list:
    out: list = [1]
    for _ in range(depth):
        out = [out]
    return out


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3), "Tensor is not plain config data"),
        (_nested(20), "nested deeper than"),
        ("x" * 100_000, "a string of 100000 characters"),
        (list(range(20_000)), "more than 10000 values"),
    ],
    ids=["tensor", "deep", "long-string", "many-values"],
)
def test_values_must_be_small_plain_data(bad, message: str) -> None:
    spec = _detector(LIDAR)
    spec["init_args"]["head_channels"] = bad
    with pytest.raises(ConfigError, match=message) as info:
        validate(spec, "detector")
    assert len(str(info.value)) < 400  # a short prefix of the value, never the value


def test_allow_list_builds_the_shipped_components() -> None:
    assert set(COMPONENTS) == {
        "drivetl.models.BEVDetector", "drivetl.models.LidarEncoder", "drivetl.models.CameraEncoder",
        "drivetl.models.ImageBackbone",
    }
    # the defining module's path, as older checkpoints may record it, names the same class
    det = instantiate({**_detector(LIDAR), "class_path": "drivetl.models.detector.BEVDetector"})
    assert type(det).__name__ == "BEVDetector"


def _hostile_checkpoint(path: Path, target: Path, task: str) -> Path:
    """A weights-only checkpoint whose stored detector config names a file writer in its LiDAR slot."""
    meta = {
        "task": task,
        "arch": "drivetl.models.BEVDetector",
        "classes": ["vehicle"],
        "detector": _detector(_writer(target)),
        "state_dict_prefix": "model.",
    }
    torch.save({"state_dict": {"model.w": torch.zeros(1)}, "drivetl": meta, "global_step": 0}, path)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet") / "team"
    rig = load_rig(Path(__file__).resolve().parents[2] / "configs" / "rigs" / "fleet_xt32.yaml")
    write_example_team(root, rig, frames=2, seed=0)
    return root


def test_evaluate_refuses_hostile_checkpoint(tmp_path: Path, fleet: Path, capsys: pytest.CaptureFixture):
    target = tmp_path / "written.txt"
    ckpt = _hostile_checkpoint(tmp_path / "hostile.ckpt", target, "pretrain")
    data = fleet
    rc = main(["evaluate", "--ckpt", str(ckpt), "--data", str(data), "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a detector component" in err, err
    assert not target.exists()


def test_finetune_refuses_hostile_checkpoint(tmp_path: Path, fleet: Path, capsys: pytest.CaptureFixture):
    target = tmp_path / "written.txt"
    ckpt = _hostile_checkpoint(tmp_path / "hostile.ckpt", target, "pretrain")
    data = fleet
    configs = Path(__file__).resolve().parents[2] / "configs" / "finetune"
    rc = main(["finetune", "--config", str(configs / "base.yaml"), "--config", str(configs / "lora.yaml"),
               "--model.pretrained", str(ckpt), "--data.root", str(data),
               "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a detector component" in err, err
    assert not target.exists()
