"""The Lightning module for domain-adaptation fine-tuning (`drivetl finetune`).

`FinetuneModule` rebuilds the pretrained detector from its checkpoint's ``"drivetl"`` metadata
(the pretraining-only heads left out), loads the pretrained tensors with
`drivetl.models.checkpoint.load_pretrained` (the encoders by default, the head optionally; a
changed class list is mapped by name), applies one adapter method of
`drivetl.models.adapters.METHODS` and a freezing policy, and prints and logs the
trainable-parameter count and share. It runs the detector with its adapted forward (FiLM reads
each frame's rig vector from the batch). What batches it takes (`batch_spec`: point columns,
classes, cameras, image size of the pretrained encoders) is linked into the data module by the
command line. See docs/finetune.md.

Training: CenterPoint detection loss on the labeled target frames (plus source frames when the data
module mixes them in); with self-training, unlabeled target frames get pseudo-labels from a frozen
copy of the model taken at each epoch start (boxes above `pseudo_threshold`), weighted by
`pseudo_weight`. Validation: AP on the declared labeled validation split (``val/ap``, the
checkpoint-selection metric by default), BEV-centre recall, and a label-free criterion
(``val/entropy``: mean binary entropy of the top heatmap peaks, lower is more confident).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from drivetl.data.collate import Batch
from drivetl.data.dataset import BASE_COLUMNS, BatchSpec
from drivetl.errors import CheckpointError, ConfigError
from drivetl.models.adapters import (
    METHODS,
    AdaptedDetector,
    AdapterSpec,
    adapted_forward,
    adapter_recipe,
    apply_method,
    build_detector,
    count_parameters,
    freeze_model,
    frozen_norms_eval,
    parameter_table,
    reestimate_batchnorm,
)
from drivetl.models.checkpoint import (
    ARCH,
    META_KEY,
    detector_metadata,
    load_pretrained,
    plain_builtins,
    read_checkpoint,
)
from drivetl.models.tta import check_model_tta, tta_forward
from drivetl.train._finetune_select import ValidationScores, pseudo_label_batch
from drivetl.train._optim import adamw_warmup_cosine
from drivetl.train._size_priors import SizeBias, SizeBiasCounter
from drivetl.train._weight_average import WeightAverage
from drivetl.train.losses import detection_loss

__all__ = ["SELECTION", "FinetuneModule"]

#: checkpoint key of the self-training teacher's tensors (resumable checkpoints only)
TEACHER_KEY = "drivetl_teacher"

#: checkpoint key of the raw trainable tensors when the state dict holds their average (`ema_decay`)
EMA_RAW_KEY = "drivetl_ema_raw"

#: selection criterion -> (monitored metric, mode)
SELECTION = {"val_ap": ("val/ap", "max"), "label_free": ("val/entropy", "min")}


class FinetuneModule(pl.LightningModule):
    """Fine-tune a pretrained `BEVDetector` on another rig's data with adapters.

    pretrained: the pretraining checkpoint (``drivetl pretrain``'s ``*.ckpt``).
    detector: the detector config, only for checkpoints without drivetl metadata (None: the checkpoint's).
    classes / class_map: the fine-tune class list (None: the checkpoint's) and renames old -> new.
    load_head: load the pretrained head too (else only `include`, the encoders and fusion).
    include: module prefixes to load (None: lidar, camera, fusion, + head with `load_head`).
    method: a name of `drivetl.models.adapters.METHODS` (lora, bottleneck, film, norm, domain_norm,
        none). targets, rank, alpha, lora_dropout, reduction, film_hidden: the adapter (`AdapterSpec`).
    freeze, last_k: freezing policy (adapters+head | last_k | full).
    reestimate_norms: re-estimate BatchNorm statistics on the target training frames before training
        (None: as the method's table row says: on for norm and domain_norm); norm_batches: batches
        used for it (by `FinetuneStart` at the start of fitting).
    recalibrate_sizes: before training, scale each class's size prior by the pretrained model's size
        bias on the labeled target frames (median label / detection size of pairs within 1 m, per
        dimension; `drivetl.train._size_priors`), after any BatchNorm re-estimation. Needs a head
        with ``size_priors``. The new priors go into the detector config the run writes.
    self_training, pseudo_threshold, pseudo_weight, self_training_start_epoch: self-training.
    selection: checkpoint selection, val_ap (declared labeled val split) or label_free (val/entropy).
    start_candidate: the weights fine-tuning starts from (after any BatchNorm re-estimation and size
        recalibration) compete in the selection: after training they are validated once and
        exported instead of the best checkpoint when they score better (`drivetl.train.export_run`),
        so a run that only made the model worse on its validation frames ships its start. Not for a
        resumed run (its start weights are not known).
    val_matcher: AP matching, distance (BEV centre within 2 m) or iou (Waymo thresholds).
    val_tta: the validation AP (and so the selection) scores test-time flips of the validation
        frames (`drivetl.models.tta`: "none", "flip", "double_flip"), as ``drivetl evaluate --tta``
        scores; the validation loss stays one pass.
    ema_decay: 0 (off) or the decay of a running average of the trainable tensors
        (`drivetl.train._weight_average.WeightAverage`, updated after every optimizer step);
        validation scores the average and the checkpoints hold it, with the raw tensors beside
        them under `EMA_RAW_KEY`, so a resumed run continues both.
    lr, weight_decay, warmup_steps: AdamW with warm-up then cosine decay to 5%.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        detector: dict | None = None,
        classes: list[str] | None = None,
        class_map: dict[str, str] | None = None,
        load_head: bool = False,
        include: list[str] | None = None,
        method: str = "lora",
        targets: list[str] | None = None,
        rank: int = 8,
        alpha: float = 16.0,
        lora_dropout: float = 0.0,
        reduction: int = 4,
        film_hidden: int = 64,
        freeze: Literal["adapters+head", "last_k", "full"] = "adapters+head",
        last_k: int = 1,
        reestimate_norms: bool | None = None,
        norm_batches: int = 50,
        recalibrate_sizes: bool = False,
        self_training: bool = False,
        pseudo_threshold: float = 0.5,
        pseudo_weight: float = 1.0,
        self_training_start_epoch: int = 1,
        selection: Literal["val_ap", "label_free"] = "val_ap",
        start_candidate: bool = True,
        val_matcher: Literal["distance", "iou"] = "distance",
        val_tta: Literal["none", "flip", "double_flip"] = "none",
        ema_decay: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 20,
        recall_distance: float = 2.0,
        score_threshold: float = 0.3,
    ):
        super().__init__()
        self.save_hyperparameters()
        if pretrained is None:
            raise ConfigError("model.pretrained: give the pretrained checkpoint (--model.pretrained CKPT)")
        _, meta = read_checkpoint(pretrained)
        meta = meta or {}
        if meta.get("arch") and meta["arch"] != ARCH:
            raise CheckpointError(
                f"{pretrained}: checkpoint architecture is {meta['arch']!r}, fine-tuning builds {ARCH!r}; "
                "use a checkpoint written by drivetl pretrain"
            )
        det_cfg = detector or meta.get("detector")
        if det_cfg is None:
            raise CheckpointError(
                f"{pretrained}: no detector config in the checkpoint's 'drivetl' metadata; "
                "pass --model.detector "
                "(the class_path/init_args config it was trained with)"
            )
        self.model, self.detector_config = build_detector(det_cfg, str(pretrained), classes=classes)
        requested = (
            list(include)
            if include is not None
            else ["lidar", "camera", "fusion"] + (["head"] if load_head else [])
        )
        names = list(self.model.state_dict())
        self.include = [p for p in requested if any(k == p or k.startswith(p + ".") for k in names)]
        if requested and not self.include:
            raise ConfigError(f"model.include {requested} names no module of the detector (lidar, camera...)")
        self.load_report = None
        if self.include:
            self.load_report = load_pretrained(
                self.model,
                pretrained,
                include=self.include,
                arch=ARCH,
                classes=list(self.model.classes),
                class_map=class_map,
            )
        else:
            print(f"fine-tune: include is empty: training from scratch (architecture of {pretrained})")
        self.spec = AdapterSpec(
            method=method,
            targets=tuple(targets) if targets else None,
            rank=rank,
            alpha=alpha,
            dropout=lora_dropout,
            reduction=reduction,
            film_hidden=film_hidden,
            freeze=freeze,
            last_k=last_k,
        )
        self.adapted = apply_method(self.model, self.spec)
        report = self.load_report
        loaded = report.loaded + report.class_mapped if report is not None else None
        self.param_count = freeze_model(self.model, self.spec, loaded)
        print(f"fine-tune: method {method}, freezing {freeze}")
        print(parameter_table(self.model))
        self.pretrained_meta = {k: meta.get(k) for k in ("arch_signature", "rigs", "classes", "grid", "bev")}
        camera = self.model.camera is not None
        #: the batch inputs the pretrained encoders saw (None: not recorded)
        self.inputs = {
            "point_columns": meta.get("point_columns"),
            "camera_names": meta.get("camera_names") if camera else None,
            "image_size": meta.get("image_size") if camera else None,
        }
        self.rigs: set[str] = set()
        self.norms_reestimated = False
        #: the size bias taken into the priors (None: not recalibrated)
        self.size_bias: SizeBias | None = None
        if recalibrate_sizes and self.model.head.log_priors is None:
            raise ConfigError(
                "model.recalibrate_sizes needs a head that regresses sizes relative to priors "
                "(detector init_args.size_priors); this checkpoint's head has none"
            )
        check_model_tta(val_tta, self.model, where="model.val_tta")
        #: the running average of the trainable tensors (`ema_decay`; inactive when 0)
        self.weight_average = WeightAverage(ema_decay, where="model.ema_decay")
        self._teacher: list = []  # a plain list keeps the teacher out of the state dict
        self._teacher_epoch: int | None = None  # the epoch the teacher was taken for
        self.scores = ValidationScores(
            list(self.model.classes), val_matcher, recall_distance, score_threshold
        )

    # ------------------------------------------------------------------ what the run needs of its data
    @property
    def batch_spec(self) -> BatchSpec:
        """The batches this model takes: the pretrained encoders' point columns, cameras and image
        size, and the head's classes (the command line links it into the data module)."""
        size = self.inputs["image_size"]
        return BatchSpec(
            columns=tuple(self.inputs["point_columns"] or BASE_COLUMNS),
            classes=tuple(self.model.classes),
            image_size=tuple(size) if size else None,
            camera_names=self.inputs["camera_names"],
        )

    @property
    def uses_unlabeled(self) -> bool:
        """True when training also takes unlabeled batches (self-training)."""
        return bool(self.hparams.self_training)

    @property
    def do_reestimate(self) -> bool:
        """Whether BatchNorm statistics are re-estimated on target frames before training."""
        flag = self.hparams.reestimate_norms
        return METHODS[self.hparams.method].reestimate_norms if flag is None else bool(flag)

    @property
    def monitor(self) -> tuple[str, str]:
        """(metric, mode) that selects the checkpoint."""
        return SELECTION[self.hparams.selection]

    def adapter_metadata(self) -> dict[str, Any]:
        """What `build_adapted` needs to rebuild the model from the pretrained checkpoint + adapter file."""
        hp = self.hparams
        return {
            "task": "finetune",
            "method": hp.method,
            "freeze": hp.freeze,
            "detector": self.detector_config,
            "classes": list(self.model.classes),
            "class_map": dict(hp.class_map or {}),
            "include": self.include,
            "pretrained": str(Path(hp.pretrained).resolve()),
            "point_columns": self.inputs["point_columns"],
            "camera_names": self.inputs["camera_names"],
            "image_size": self.inputs["image_size"],
            "pretrained_arch_signature": self.pretrained_meta.get("arch_signature"),
            "trainable_share": self.param_count.share,
        }

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch):
        """`DetectorOutputs` of the adapted detector (FiLM conditioned on the batch's rig vectors)."""
        return adapted_forward(self.model, batch)

    def adapted_detector(self) -> AdaptedDetector:
        """The model as `load_finetuned` would return it (sharing this module's weights)."""
        return AdaptedDetector(self.model, self.adapter_metadata())

    # ------------------------------------------------------------------ norms, counts
    def reestimate_norms(self, batches: Iterable[Batch]) -> int:
        """Re-estimate BatchNorm statistics on target `batches` (at most `norm_batches`), once, on
        this module's device; returns the number of batches used (0 when done already)."""
        if self.norms_reestimated:
            return 0
        n = reestimate_batchnorm(
            self.model,
            batches,
            forward_fn=lambda model, batch: adapted_forward(model, batch.to(self.device)),
            max_batches=self.hparams.norm_batches,
        )
        self.norms_reestimated = True
        print(f"fine-tune: BatchNorm statistics re-estimated on {n} target batches")
        return n

    @torch.no_grad()
    def recalibrate_sizes(self, batches: Iterable[Batch]) -> SizeBias:
        """Move the head's size priors by the model's size bias on the labeled target `batches` (un-
        augmented), once; the detector config follows, so checkpoints and adapter files rebuild
        the recalibrated head."""
        if self.size_bias is not None:
            return self.size_bias
        head = self.model.head
        counter = SizeBiasCounter(self.model.classes, score_threshold=self.hparams.score_threshold)
        was_training = self.model.training
        self.model.eval()
        frames = 0
        for batch in batches:
            batch = batch.to(self.device)
            for i, det in enumerate(adapted_forward(self.model, batch).detections()):
                counter.update(det.boxes, det.scores, det.labels, *batch.frame_boxes(i))
            frames += batch.batch_size
        self.model.train(was_training)
        frozen_norms_eval(self.model)
        bias = counter.compute()
        priors = head.log_priors.exp().tolist()
        for k, ratio in enumerate(bias.log_ratio):
            if ratio is not None:
                priors[k] = [p * math.exp(r) for p, r in zip(priors[k], ratio, strict=True)]
        self._set_priors(priors)
        self.size_bias = bias
        print(f"fine-tune: size priors recalibrated on {frames} labeled frames: {bias.describe()}")
        return bias

    def _set_priors(self, priors: list[list[float]]) -> None:
        """The head's size priors and the detector config's, the same rounded metres (K x 3, class
        order), so a model rebuilt from the config decodes exactly as this one."""
        rounded = [[round(float(v), 6) for v in row] for row in priors]
        head = self.model.head
        head.log_priors.copy_(torch.tensor(rounded, dtype=head.log_priors.dtype).log())
        args = self.detector_config.setdefault("init_args", {})
        args["size_priors"] = dict(zip(self.model.classes, rounded, strict=True))

    def remember_start(self) -> None:
        """Keep a copy of the weights training starts from (a selection candidate, `start_candidate`)."""
        self.start_state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

    def on_train_start(self) -> None:
        """Log the trainable-parameter count; start the weight average (`ema_decay`) from the weights
        training starts with (after any BatchNorm re-estimation and size recalibration), unless a
        resumed checkpoint brought it."""
        count = count_parameters(self.model)
        for logger in self.loggers:
            logger.log_metrics(count.as_dict(), step=0)
        self.weight_average.start(self.model)  # not when a resumed checkpoint brought it

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimizer's step, then the weight average's (`ema_decay`): both before any checkpoint
        of this step is written."""
        super().optimizer_step(*args, **kwargs)
        self.weight_average.update(self.model)

    def on_train_end(self) -> None:
        """The weight average is done: the checkpoints hold it, and the selected one is exported."""
        self.weight_average.stop()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Keep frozen BatchNorm layers in eval mode; at an epoch's first batch take its teacher."""
        # Lightning puts the whole model back in train mode after each validation (also mid-epoch):
        # keep frozen BatchNorm layers on their pretrained / re-estimated statistics
        frozen_norms_eval(self.model)
        if self._teacher_epoch != self.current_epoch:
            self._take_teacher()

    def _take_teacher(self) -> None:
        """The self-training teacher of the current epoch: a frozen copy of the model, once the
        start epoch is reached. Taken at the epoch's first batch rather than in
        ``on_train_epoch_start``, which Lightning does not call for the epoch a run resumed from a
        checkpoint written at the end of the one before starts."""
        self._teacher.clear()
        self._teacher_epoch = self.current_epoch
        if self.hparams.self_training and self.current_epoch >= self.hparams.self_training_start_epoch:
            teacher = copy.deepcopy(self.model).eval()
            teacher.requires_grad_(False)
            self._teacher.append(teacher)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Detection loss on the labeled batch, plus the self-training loss on pseudo-labels."""
        labeled = batch["labeled"] if isinstance(batch, dict) else batch
        self.rigs.update(r for r in labeled.rig_names if r)
        b = labeled.batch_size
        terms = detection_loss(self(labeled), labeled)
        loss = sum(terms.values())
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=b)
        unlabeled = batch.get("unlabeled") if isinstance(batch, dict) else None
        if unlabeled is not None and self._teacher:
            with torch.no_grad():
                out = adapted_forward(self._teacher[0], unlabeled)
            pseudo = pseudo_label_batch(unlabeled, out, self.hparams.pseudo_threshold)
            self.log(
                "train/pseudo_boxes",
                float(pseudo.boxes.shape[0]) / unlabeled.batch_size,
                batch_size=unlabeled.batch_size,
            )
            if pseudo.boxes.shape[0]:
                st = detection_loss(self(pseudo), pseudo)
                st_loss = sum(st.values())
                self.log("train/self_training", st_loss, batch_size=unlabeled.batch_size)
                loss = loss + self.hparams.pseudo_weight * st_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        return loss

    def on_validation_epoch_start(self) -> None:
        """Start a new accumulation of the validation scores (of the weight average, `ema_decay`)."""
        self.scores.reset()
        self.weight_average.swap(self.model)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Log the validation loss and accumulate AP, recall and entropy."""
        outputs = self(batch)
        b = batch.batch_size
        terms = detection_loss(outputs, batch)
        self.log("val/loss", sum(terms.values()), batch_size=b, sync_dist=True)
        if self.hparams.val_tta != "none":  # the pass as recorded is the one above, not run again
            plain = outputs
            outputs = tta_forward(lambda b: plain if b is batch else self(b), batch, self.hparams.val_tta)
        self.scores.update(outputs, batch)

    def on_validation_epoch_end(self) -> None:
        """Log val/ap, val/recall, val/entropy; ConfigError when val_ap selection has no labeled frame."""
        values = self.scores.compute()
        metric, _ = self.monitor
        if metric == "val/ap" and math.isnan(values["val/ap"]):
            raise ConfigError(
                "model.selection val_ap needs labeled validation frames, but the validation split has no "
                f"boxes of {list(self.model.classes)}; declare a labeled val split (data.val_split) or use "
                "--model.selection label_free"
            )
        for name, value in values.items():
            if not math.isnan(value):
                self.log(name, value, prog_bar=name in ("val/ap", "val/recall"), sync_dist=False)
        self.weight_average.swap(self.model)  # training goes on with the raw tensors

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        """AdamW with warm-up and cosine decay over the trainable parameters."""
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not params:
            raise ConfigError("nothing to train: the freezing policy froze every parameter")
        return adamw_warmup_cosine(
            params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
            warmup_steps=self.hparams.warmup_steps, total_steps=self.trainer.estimated_stepping_batches,
        )

    # ------------------------------------------------------------------ checkpoint metadata
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store `finetune_metadata` in the checkpoint, and in a full (resumable) checkpoint the
        self-training teacher of the current epoch, so a run resumed mid-epoch labels with it."""
        checkpoint[META_KEY] = self.finetune_metadata()
        if self._teacher and "optimizer_states" in checkpoint:
            checkpoint[TEACHER_KEY] = self._teacher[0].state_dict()
        raw = self.weight_average.save(checkpoint["state_dict"], prefix="model.")
        if raw is not None:  # the average is what the checkpoint's weights are; the raw tensors beside
            checkpoint[EMA_RAW_KEY] = raw

    def finetune_metadata(self) -> dict[str, Any]:
        """``checkpoint["drivetl"]``: `detector_metadata`'s fields (so a fine-tune checkpoint can
        itself be loaded with `load_pretrained`), plus the adapter recipe and everything
        `load_finetuned` needs."""
        seen = {
            "columns": self.inputs["point_columns"],
            "camera_names": self.inputs["camera_names"],
            "image_size": self.inputs["image_size"],
            "rigs": self.rigs,
        }
        meta = detector_metadata(
            self.model, dict(self.hparams), seen, task="finetune", detector_config=self.detector_config
        )
        count = count_parameters(self.model)
        meta.update(
            {
                "adapters": {
                    "method": self.hparams.method,
                    "freeze": self.hparams.freeze,
                    "recipe": adapter_recipe(self.model),
                    "trainable": count.trainable,
                    "total": count.total,
                    "share": count.share,
                },
                "norms_reestimated": self.norms_reestimated,
                "size_recalibration": None
                if self.size_bias is None
                else {
                    "classes": list(self.size_bias.classes),
                    "log_ratio": [list(r) if r is not None else None for r in self.size_bias.log_ratio],
                    "pairs": list(self.size_bias.pairs),
                },
                "pretrained": plain_builtins(self.pretrained_meta) | {"path": str(self.hparams.pretrained)},
            }
        )
        return meta

    def _resuming(self) -> bool:
        """True while a trainer fits this module (a checkpoint loaded now resumes training); False
        when the module is only loaded, whose weights should stay the checkpoint's average."""
        return self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what the metadata records of the run (norms re-estimated, rigs trained on) and the
        self-training teacher (a resumed epoch does not start again, so it takes none itself)."""
        meta = checkpoint.get(META_KEY) or {}
        self.norms_reestimated = bool(meta.get("norms_reestimated", False))
        self.rigs.update(meta.get("rigs") or [])
        recal = meta.get("size_recalibration")
        if recal and self.size_bias is None:
            # the priors are not in the state dict: a resumed run takes them from the metadata
            priors = ((meta.get("detector") or {}).get("init_args") or {}).get("size_priors")
            self._set_priors([list(priors[c]) for c in self.model.classes])
            self.size_bias = SizeBias(
                tuple(recal["classes"]),
                tuple(tuple(r) if r is not None else None for r in recal["log_ratio"]),
                tuple(recal["pairs"]),
            )
        raw = checkpoint.get(EMA_RAW_KEY)
        if raw is not None and self._resuming():
            # the state dict holds the average; training continues from the raw tensors (which the
            # optimizer state belongs to), and averaging goes on when the run still asks for it
            self.weight_average.restore(checkpoint["state_dict"], raw, prefix="model.")
        self._teacher.clear()
        # the checkpoint's teacher (or none) belongs to the epoch it was written in: a run resumed
        # part-way through that epoch labels with it, one resumed at the next epoch takes a new one
        self._teacher_epoch = int(checkpoint["epoch"]) if "epoch" in checkpoint else None
        teacher_state = checkpoint.get(TEACHER_KEY)
        if teacher_state is not None:
            teacher = copy.deepcopy(self.model).eval()
            teacher.load_state_dict(teacher_state)
            teacher.requires_grad_(False)
            self._teacher.append(teacher)

