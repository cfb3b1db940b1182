"""drivetl.train: the pretraining Lightning module, loss functions and training metrics.

- `PretrainModule` (Lightning) and `checkpoint_metadata` / `CHECKPOINT_KEY`: what a checkpoint records.
- `losses`: `detection_loss`, `masked_occupancy_loss`, `alignment_loss`, `total_loss` — each a function
  of ``(outputs, batch)`` returning named terms.
- `centre_matches`: BEV-centre recall/precision for training curves.
- `run_pretrain` (in `drivetl.train.cli`): the LightningCLI entry behind ``drivetl pretrain``.
"""

from drivetl.train.losses import (
    OBJECTIVES,
    alignment_loss,
    detection_loss,
    focal_heatmap_loss,
    masked_occupancy_loss,
    total_loss,
)
from drivetl.train.metrics import CentreMatch, centre_matches
from drivetl.train.pretrain import CHECKPOINT_FORMAT, CHECKPOINT_KEY, PretrainModule, checkpoint_metadata

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEY",
    "OBJECTIVES",
    "CentreMatch",
    "PretrainModule",
    "alignment_loss",
    "centre_matches",
    "checkpoint_metadata",
    "detection_loss",
    "focal_heatmap_loss",
    "masked_occupancy_loss",
    "total_loss",
]
