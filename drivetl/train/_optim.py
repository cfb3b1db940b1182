"""The optimizer both training modules use: AdamW (no decay on biases, norms, tokens) with linear
warm-up then cosine decay to 5% of the learning rate, stepped per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def adamw_warmup_cosine(
    named_params: Iterable[tuple[str, torch.nn.Parameter]],
    *,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
) -> dict:
    """Lightning's ``configure_optimizers`` return value for the given trainable parameters.

    Parameters with ndim <= 1 or named ``*mask_token`` get no weight decay. Warm-up is capped at a
    fifth of `total_steps` so short runs still reach the cosine phase.
    """
    decay, no_decay = [], []
    for name, p in named_params:
        (no_decay if p.ndim <= 1 or name.endswith("mask_token") else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
    )
    total = max(int(total_steps), 1)
    warm = min(warmup_steps, max(total // 5, 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min((step - warm) / max(total - warm, 1), 1.0)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
