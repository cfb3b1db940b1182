"""drivetl.train: what trains — the Lightning modules, losses, the optimizer schedule, the LightningCLI base.

- `PretrainModule` (`drivetl.train.pretrain`) and `FinetuneModule` (`drivetl.train.finetune`);
- `losses`: `detection_loss`, `masked_occupancy_loss`, `alignment_loss`, `total_loss` — each a function
  of ``(outputs, batch)`` returning named terms;
- `centre_matches`: BEV-centre recall/precision for training curves;
- `drivetl.train.cli`: the LightningCLI entries behind ``drivetl pretrain`` (`run_pretrain`) and
  ``drivetl finetune`` (`run_finetune`, with the export of the run).

Evaluation runs and the demo are multi-stage jobs of `drivetl.workflows`; the data modules are in
`drivetl.data.datamodule`; adapters and checkpoint metadata in `drivetl.models`.
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
from drivetl.train.pretrain import PretrainModule

__all__ = [
    "OBJECTIVES",
    "CentreMatch",
    "PretrainModule",
    "alignment_loss",
    "centre_matches",
    "detection_loss",
    "focal_heatmap_loss",
    "masked_occupancy_loss",
    "total_loss",
]
