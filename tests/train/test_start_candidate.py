"""The weights fine-tuning starts from compete in the selection (`FinetuneModule.start_candidate`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from drivetl.train.cli import _start_if_better


class _Module(nn.Linear):
    """Stands in for a FinetuneModule: its validation score is the sum of its weights."""

    monitor = ("val/ap", "max")

    def __init__(self, start: float, trained: float):
        super().__init__(2, 1, bias=False)
        with torch.no_grad():
            self.weight.fill_(start / 2)
        self.start_state = {k: v.clone() for k, v in self.state_dict().items()}
        with torch.no_grad():
            self.weight.fill_(trained / 2)


def _trainer():
    calls = []

    def validate(module, datamodule, verbose):
        calls.append(float(module.weight.sum()))
        return [{"val/ap": float(module.weight.sum())}]

    return SimpleNamespace(datamodule=object(), validate=validate), calls


@pytest.mark.parametrize(
    ("start", "trained", "kept"), [(0.4, 0.3, "start"), (0.2, 0.3, "best"), (0.3, 0.3, "best")]
)
def test_start_weights_are_kept_only_when_they_validate_better(
    start: float, trained: float, kept: str
) -> None:
    module = _Module(start, trained)
    trainer, calls = _trainer()
    best, score = _start_if_better(trainer, module, "best-step=9.ckpt", torch.tensor(trained))
    assert calls == [pytest.approx(start)]  # the start weights were the ones validated
    if kept == "start":
        assert best == "start" and score == pytest.approx(start)
        assert float(module.weight.sum()) == pytest.approx(start)
    else:  # a tie keeps the trained weights
        assert best == "best-step=9.ckpt" and float(score) == pytest.approx(trained)
        assert float(module.weight.sum()) == pytest.approx(trained)


def test_no_start_weights_or_no_score_skips_the_check() -> None:
    module = _Module(0.9, 0.1)
    trainer, calls = _trainer()
    module.start_state = None
    assert _start_if_better(trainer, module, "b.ckpt", torch.tensor(0.1)) == ("b.ckpt", pytest.approx(0.1))
    module = _Module(0.9, 0.1)
    assert _start_if_better(trainer, module, "", None) == ("", None)
    assert calls == []
