"""A running average of a model's trainable tensors (`FinetuneModule`'s ``ema_decay``).

Polyak averaging as mean-teacher and weight-EMA training keep it: after every optimizer step each
trainable tensor's exponential moving average moves towards the tensor, the decay warmed up as
min(decay, (1 + n) / (10 + n)) after n updates, so the first steps are not buried under the start.
The owner swaps the average in for validation (and back), writes it into checkpoints as their
weights with the raw tensors beside them, and takes both back when a run resumes.

Lightning's own ``EMAWeightAveraging`` callback copies the module when fitting is set up, before
fine-tuning re-estimates BatchNorm statistics and recalibrates size priors, and averages every
buffer; this one starts from the weights training actually starts with and leaves buffers alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from drivetl.errors import ConfigError

__all__ = ["WeightAverage"]


class WeightAverage:
    """The average of `module`'s trainable tensors by parameter name (`start` to `stop`).

    decay: in [0, 1); 0 never starts (off). `where`: how errors name the option.
    """

    def __init__(self, decay: float, where: str = "ema_decay"):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"{where} {decay}: use 0 (off) or a decay below 1, e.g. 0.98")
        self.decay = float(decay)
        self.tensors: dict[str, torch.Tensor] = {}
        self.updates = 0

    @property
    def active(self) -> bool:
        """True between `start` (or `restore`) and `stop`."""
        return bool(self.tensors)

    def start(self, module: nn.Module) -> None:
        """Average from `module`'s trainable tensors as they are now (unless on, or off by decay 0)."""
        if self.decay > 0 and not self.tensors:
            self.tensors = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
            self.updates = 0

    def update(self, module: nn.Module) -> None:
        """One step of the average towards `module`'s tensors (after an optimizer step)."""
        if not self.tensors:
            return
        self.updates += 1
        n = self.updates
        keep = min(self.decay, (1.0 + n) / (10.0 + n))
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name in self.tensors:
                    self.tensors[name].lerp_(p.detach(), 1.0 - keep)

    def swap(self, module: nn.Module) -> None:
        """Exchange `module`'s trainable tensors with the average (a second call swaps them back)."""
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name in self.tensors:
                    raw = p.detach().clone()
                    p.copy_(self.tensors[name])
                    self.tensors[name] = raw

    def stop(self) -> None:
        """The average is done (later checkpoints hold the module's weights as they are)."""
        self.tensors = {}

    def save(self, state: dict[str, torch.Tensor], prefix: str) -> dict[str, Any] | None:
        """Put the average into the state dict `state` (keys `prefix` + parameter name) and return
        the raw tensors and the update count, to be stored beside it (None when not averaging)."""
        if not self.tensors:
            return None
        raw = {}
        for name, avg in self.tensors.items():
            raw[name] = state[prefix + name]
            state[prefix + name] = avg.detach().clone()
        return {"tensors": raw, "updates": self.updates}

    def restore(self, state: dict[str, torch.Tensor], saved: dict[str, Any], prefix: str) -> None:
        """Resuming from a checkpoint `save` wrote: go on averaging from its average (when the decay
        is on) and put the raw tensors back into `state`, which training continues from."""
        if self.decay > 0:
            self.tensors = {name: state[prefix + name].detach().clone() for name in saved["tensors"]}
            self.updates = int(saved["updates"])
        for name, value in saved["tensors"].items():
            state[prefix + name] = value
