"""The Lightning module for pretraining (`drivetl pretrain`).

The detector is described by a plain ``class_path``/``init_args`` dict (`drivetl.models.instantiate`),
so the exact architecture is stored in the checkpoint as data and can be rebuilt without this module.
Each checkpoint carries a ``"drivetl"`` entry (`drivetl.models.checkpoint.detector_metadata`) with
what fine-tuning needs to know what it loads: the detector config, the class list, the voxel grid and
BEV geometry, the point columns, camera names and image size the encoders saw, the rigs of the
training data and the canonical frame they were brought to, and the full hyper-parameters.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from drivetl.data.collate import Batch
from drivetl.errors import ConfigError
from drivetl.models import BEVDetector, instantiate
from drivetl.models.checkpoint import META_KEY, detector_metadata
from drivetl.train._optim import adamw_warmup_cosine
from drivetl.train.losses import OBJECTIVES, total_loss
from drivetl.train.metrics import centre_matches

__all__ = ["PretrainModule"]


class PretrainModule(pl.LightningModule):
    """Pretraining of `BEVDetector` with any subset of the objectives.

    detector: ``{"class_path": "drivetl.models.BEVDetector", "init_args": {...}}``.
    objectives: objective name (`drivetl.train.losses.OBJECTIVES`: detection, occupancy, alignment)
        -> weight; 0 switches it off. Without labels, use occupancy and/or alignment only.
    mask_ratio: share of LiDAR BEV cells hidden from the backbone while occupancy is on.
    lr, weight_decay, warmup_steps: AdamW with linear warm-up then cosine decay to 5% over the run.
    recall_distance, score_threshold: validation BEV-centre recall (metres, detection score).
    """

    def __init__(
        self,
        detector: dict,
        objectives: dict[str, float] | None = None,
        mask_ratio: float = 0.3,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 50,
        recall_distance: float = 2.0,
        score_threshold: float = 0.1,
    ):
        super().__init__()
        objectives = dict(objectives if objectives is not None else {"detection": 1.0})
        unknown = set(objectives) - set(OBJECTIVES)
        if unknown:
            raise ConfigError(
                f"model.objectives: unknown {sorted(unknown)}; choose from {sorted(OBJECTIVES)}"
            )
        if not any(w > 0 for w in objectives.values()):
            raise ConfigError("model.objectives: switch on at least one objective with a weight > 0")
        self.save_hyperparameters()
        self.model: BEVDetector = instantiate(detector, "model.detector")
        if not isinstance(self.model, BEVDetector):
            raise ConfigError(
                f"model.detector must build a drivetl.models.BEVDetector, got {type(self.model)}"
            )
        if objectives.get("alignment", 0) > 0 and self.model.align_head is None:
            raise ConfigError("model.objectives.alignment needs a camera encoder and align_head: true")
        if objectives.get("occupancy", 0) > 0 and self.model.occupancy_head is None:
            raise ConfigError("model.objectives.occupancy needs occupancy_head: true")
        self.objectives = objectives
        self._seen: dict[str, Any] = {
            "rigs": set(),
            "columns": None,
            "camera_names": None,
            "image_size": None,
        }

    # ------------------------------------------------------------------ steps
    def forward(self, batch: Batch, mask_ratio: float = 0.0):
        """`DetectorOutputs` of the detector (`mask_ratio` of LiDAR BEV cells hidden)."""
        return self.model(batch, mask_ratio=mask_ratio)

    def _mask_ratio(self) -> float:
        return self.hparams.mask_ratio if self.objectives.get("occupancy", 0) > 0 else 0.0

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """The weighted objectives on one batch; each term logged."""
        self._remember(batch)
        outputs = self.model(batch, mask_ratio=self._mask_ratio())
        loss, terms = total_loss(outputs, batch, self.objectives)
        b = batch.batch_size
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=b)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Validation losses with a fixed mask per batch, and BEV-centre recall/precision."""
        b = batch.batch_size
        # the same validation mask every epoch; the GPU's generator is forked too, or the seed below
        # would reset it and training would redraw the same masks after every validation
        dev = batch.points.device
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            torch.manual_seed(batch_idx)
            outputs = self.model(batch, mask_ratio=self._mask_ratio())
        loss, terms = total_loss(outputs, batch, self.objectives)
        self.log("val/loss", loss, prog_bar=True, batch_size=b, sync_dist=True)
        for name, value in terms.items():
            self.log(f"val/{name}", value, batch_size=b, sync_dist=True)
        if self.objectives.get("detection", 0) > 0:
            if self._mask_ratio() > 0:
                outputs = self.model(batch)
            dets = outputs.detections()
            geo = outputs.geometry
            gts = []
            for i in range(b):  # ground truth the map can hold: centre inside the BEV extent
                boxes, labels = batch.frame_boxes(i)
                x, y = boxes[:, 0], boxes[:, 1]
                inside = (
                    (x >= geo.x_min)
                    & (x < geo.x_min + geo.cell_x * geo.width)
                    & (y >= geo.y_min)
                    & (y < geo.y_min + geo.cell_y * geo.height)
                )
                gts.append((boxes[inside], labels[inside]))
            m = centre_matches(
                dets,
                [g[0] for g in gts],
                [g[1] for g in gts],
                distance=self.hparams.recall_distance,
                score_threshold=self.hparams.score_threshold,
            )
            if m.ground_truth:
                self.log("val/recall", m.recall, prog_bar=True, batch_size=m.ground_truth, sync_dist=True)
            self.log("val/precision", m.precision, batch_size=max(m.detections, 1), sync_dist=True)

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        """AdamW with warm-up and cosine decay over every parameter."""
        return adamw_warmup_cosine(
            self.model.named_parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
            warmup_steps=self.hparams.warmup_steps, total_steps=self.trainer.estimated_stepping_batches,
        )

    # ------------------------------------------------------------------ checkpoint metadata
    def _remember(self, batch: Batch) -> None:
        self._seen["rigs"].update(r for r in batch.rig_names if r)
        self._seen["columns"] = list(batch.columns)
        self._seen["camera_names"] = list(batch.camera_names)
        if batch.num_views:
            self._seen["image_size"] = [int(batch.images.shape[-2]), int(batch.images.shape[-1])]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store `detector_metadata` (what the encoders saw) in the checkpoint."""
        checkpoint[META_KEY] = detector_metadata(self.model, dict(self.hparams), self._seen)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what the metadata records of the data seen (a resumed run keeps it)."""
        meta = checkpoint.get(META_KEY) or {}
        self._seen["rigs"].update(meta.get("rigs", []))
        for key in ("columns", "camera_names", "image_size"):
            if meta.get(key) is not None:
                self._seen[key] = meta[key]

