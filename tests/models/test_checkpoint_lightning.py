"""A checkpoint written by a real Lightning Trainer loads weights-only, with its drivetl metadata."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from drivetl.models.checkpoint import checkpoint_metadata, load_pretrained

CLASSES = ("vehicle", "pedestrian", "cyclist")


def _net(seed: int, classes: int = len(CLASSES)) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        encoders=nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        head=nn.Conv2d(8, classes, 1),
    ))


@pytest.mark.slow  # importing Lightning alone takes several seconds
def test_trainer_checkpoint_loads_weights_only(tmp_path) -> None:
    pl = pytest.importorskip("pytorch_lightning")

    class Pretrain(pl.LightningModule):
        def __init__(self, classes: tuple[str, ...] = CLASSES) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = _net(1)

        def training_step(self, batch, batch_idx):
            return self.model(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def on_save_checkpoint(self, checkpoint: dict) -> None:
            checkpoint["drivetl"] = checkpoint_metadata(
                self.model, arch="tests.Net", classes=list(self.hparams.classes), grid={"cells": [8, 8]}
            )

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 4, 8, 8)), batch_size=2)
    module = Pretrain()
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, data)
    path = tmp_path / "pretrain.ckpt"
    trainer.save_checkpoint(path)

    model = _net(2, classes=4)
    classes = ["pedestrian", "vehicle", "cyclist", "sign"]
    report = load_pretrained(model, path, arch="tests.Net", classes=classes, print_fn=None)
    assert report.prefix == "model."
    assert report.metadata["grid"] == {"cells": [8, 8]}
    trained = module.model.state_dict()
    for key in ("encoders.0.weight", "encoders.1.running_mean"):
        assert torch.equal(model.state_dict()[key], trained[key])
    # The head is class-mapped by name, growing from 3 to 4 classes, shapes telling the class dim.
    assert set(report.class_mapped) == {"head.weight", "head.bias"}
    assert torch.equal(model.head.bias[:3], trained["head.bias"][[1, 0, 2]])
