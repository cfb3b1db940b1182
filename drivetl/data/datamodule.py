"""The data modules: `FrameDataset` batches for Lightning, in worker processes.

`FrameDataModule` holds what every training run shares: the data folder and its format, the batch
spec (point columns, classes, cameras, image size: the model's `BatchSpec`, overridden by what the
config gives), augmentation, LiDAR choice and the loaders. Its two kinds:

- `DriveDataModule` (pretraining): frames of ``root``; validation frames from ``val_root`` or,
  without one, the last ``val_fraction`` of the frames (in file order, so they are whole held-out
  stretches of driving);
- `FinetuneDataModule` (fine-tuning; which frames: `drivetl.data._finetune_frames`): a team's
  fleet folder with a labeled subset, the unlabeled rest, a declared validation split, optionally
  mixed with source frames brought towards the target rig.

Training batches come in `EpochSampler` order (`drivetl.data.sampling`: a function of ``seed`` and
the epoch), each frame augmented from (seed, epoch, frame). A data module's `state_dict`, saved in
every checkpoint, is its position in that order; a run resumed from the checkpoint leaves out the
batches already trained on and so repeats the interrupted run (docs/finetune.md, "Stopping and
resuming").

Sources (``format``): ``"waymo"`` (Waymo v1 ``*.tfrecord`` files), ``"waymo-v2"`` (a Waymo v2 folder of
Parquet component files), ``"team"`` (a team-format folder
with its ``rig.yaml``), ``"cache"`` (the training cache of ``drivetl convert``) or ``"auto"``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from drivetl.data._finetune_frames import FinetuneFrames, select_frames
from drivetl.data.augment import AugmentConfig
from drivetl.data.collate import Batch
from drivetl.data.dataset import (
    BatchSpec,
    Collate,
    FrameDataset,
    FrameSet,
    held_out,
    open_source,
    worker_init,
)
from drivetl.data.paste import ObjectBank, PasteConfig
from drivetl.data.sampling import EpochSampler, batches_per_epoch
from drivetl.errors import ConfigError, DataError, one_line

_log = logging.getLogger(__name__)

__all__ = ["DriveDataModule", "FinetuneDataModule", "FrameDataModule"]

Format = Literal["auto", "waymo", "waymo-v2", "team", "cache"]


class FrameDataModule(pl.LightningDataModule):
    """What the training data modules share (see the module docstring).

    root: the data folder; format: auto | waymo | waymo-v2 | team | cache. val_fraction: share of the frames
    held out for validation when nothing else declares them. max_frames: use at most this many
    training frames (None: all). image_size ((height, width)), camera_names, classes,
    point_columns: the batch spec; None keeps the defaults (LiDAR only, canonical classes, x y z
    intensity), or for fine-tuning the model's (`FinetuneDataModule`'s `model_spec`).
    augment: `AugmentConfig` fields (None: off). lidars: which LiDARs to use (None: all).
    batch_size, num_workers, pin_memory (None: on with CUDA), seed (training order, augmentation and
    subsets; see `drivetl.data.sampling`). paste: `PasteConfig` fields (None: off): labeled
    training frames receive objects of other labeled training frames (`drivetl.data.paste`).
    skip_corrupt: a frame that turns out unreadable during training is replaced by the next good one
    and reported with a warning naming it (default: the run stops with one line naming it).
    """

    def __init__(
        self,
        root: str | None = None,
        format: Format = "auto",
        val_fraction: float = 0.1,
        max_frames: int | None = None,
        image_size: tuple[int, int] | None = None,
        camera_names: list[str] | None = None,
        classes: list[str] | None = None,
        point_columns: list[str] | None = None,
        augment: dict[str, Any] | None = None,
        lidars: list[str] | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        skip_corrupt: bool = False,
        paste: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["model_spec"])
        self.augment_config = AugmentConfig(**augment) if augment is not None else None
        self.paste_config = PasteConfig(**paste) if paste is not None else None
        self._bank: ObjectBank | None = None
        self.spec = self.batch_spec(BatchSpec())
        # (epoch, batches done, batches per epoch) of a loaded checkpoint
        self._resume: tuple[int, int, int | None] | None = None
        self._resume_check: dict[str, Any] | None = None

    def batch_spec(self, model: BatchSpec) -> BatchSpec:
        """`model` (what the model takes) with the spec fields this data module's config gives."""
        hp = self.hparams
        return model.merged(
            columns=hp.point_columns or None,
            classes=hp.classes or None,
            image_size=hp.image_size,
            camera_names=hp.camera_names,
        )

    def _dataset(self, sets: Sequence[FrameSet], augmented: bool, stream: int = 0) -> FrameDataset:
        paste = None
        if augmented and self.paste_config is not None and any(s.labeled for s in sets):
            paste = (self._object_bank(sets), self.paste_config)
        return FrameDataset(
            sets,
            self.spec,
            augment=self.augment_config if augmented else None,
            seed=self.hparams.seed,
            stream=stream,
            lidars=self.hparams.lidars,
            skip_corrupt=self.hparams.skip_corrupt,
            paste=paste,
        )

    def _object_bank(self, sets: Sequence[FrameSet]) -> ObjectBank:
        """The object bank of `paste` (once per data module): the objects of `bank_frames` labeled
        training frames of `sets`, evenly spread over them, canonical and not augmented (with
        `skip_corrupt`, frames that do not read are left out)."""
        if self._bank is not None:
            return self._bank
        config = self.paste_config
        labeled = [s for s in sets if s.labeled]
        plain = FrameDataset(labeled, self.spec, lidars=self.hparams.lidars)
        n = len(plain)
        take = n if config.bank_frames is None else min(n, config.bank_frames)
        picks = sorted({int(i) for i in np.linspace(0, n - 1, take).round()}) if n else []
        if self.spec.cameras:
            raise ConfigError(
                f"data.paste with camera images ({list(self.spec.camera_names or ())}): a pasted object's "
                "points have no pixels in the images; remove data.paste for a camera model"
            )
        unknown = sorted(set(config.counts) - set(self.spec.classes))
        if unknown:
            raise ConfigError(
                f"data.paste.counts names classes the model does not detect: {unknown} (classes: "
                f"{list(self.spec.classes)})"
            )

        def frames():  # with skip_corrupt a frame that does not read is left out of the bank
            for i in picks:
                try:
                    yield plain[i]
                except DataError as exc:
                    if not self.hparams.skip_corrupt:
                        raise
                    _log.warning("object paste: a corrupt frame left out of the bank: %s", one_line(exc))

        self._bank = ObjectBank.from_samples(frames(), config)
        if not len(self._bank):
            raise DataError(
                f"data.paste: the {len(picks)} labeled training frames read hold no object of "
                f"{sorted(config.counts)} with at least {config.min_points} points; remove data.paste"
            )
        _log.info("object paste: a bank of %s from %d training frames", self._bank.counts(), len(picks))
        return self._bank

    def _loader(self, dataset: FrameDataset, sampler: EpochSampler | None = None) -> DataLoader:
        """Batches of `dataset`: in `sampler`'s order (training), else in order, incomplete last
        batch kept. The loader's own generator (seeded) gives its workers' base seed, so creating
        a loader draws nothing from torch's global generator."""
        hp = self.hparams
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            sampler=sampler,
            num_workers=hp.num_workers,
            collate_fn=Collate(self.spec),
            worker_init_fn=worker_init,
            pin_memory=pin,
            drop_last=sampler is not None and self._drop_last(dataset),
            persistent_workers=hp.num_workers > 0,
            prefetch_factor=4 if hp.num_workers > 0 else None,
            generator=torch.Generator().manual_seed(int(hp.seed)),
        )

    def _drop_last(self, dataset: FrameDataset) -> bool:
        return len(dataset) > self.hparams.batch_size

    def _train_loaders(self, sets: dict[str, FrameDataset]) -> dict[str, DataLoader]:
        """Shuffled training loaders over `sets`, in `EpochSampler` order, resumed where the
        checkpoint loaded by `load_state_dict` left off (see `state_dict`)."""
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        samplers = {
            name: EpochSampler(ds, seed=self.hparams.seed, stream=ds.stream, num_replicas=replicas, rank=rank)
            for name, ds in sets.items()
        }
        lengths = {
            name: batches_per_epoch(len(samplers[name]), self.hparams.batch_size, self._drop_last(ds))
            for name, ds in sets.items()
        }
        if self._resume is not None:  # once: loaders built again later start where Lightning says
            epoch, done, per_epoch = self._resume
            self._resume = None
            if done >= (per_epoch or max(lengths.values(), default=0)):  # stopped at the end of an epoch
                epoch, done = epoch + 1, 0
            for name, sampler in samplers.items():
                # a shorter loader is cycled within the epoch (Lightning's max_size_cycle)
                sampler.resume_at(epoch, (done % max(lengths[name], 1)) * self.hparams.batch_size)
        return {name: self._loader(sets[name], samplers[name]) for name in sets}

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in the data, saved in every checkpoint: the epoch, the batches of it
        already trained on, and the seed and frame count the order was drawn for."""
        trainer = self.trainer
        if trainer is None:
            return {}
        sizes = {name: len(ds) for name, ds in self._training_sets().items()}
        per_epoch = trainer.num_training_batches
        return {
            "epoch": int(trainer.current_epoch),
            "batches": int(trainer.fit_loop.epoch_loop.batch_progress.current.processed),
            "epoch_batches": int(per_epoch) if math.isfinite(per_epoch) else None,
            "seed": int(self.hparams.seed),
            "frames": sizes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the training order at the checkpoint's position (before the loaders are built).

        When the seed or the training frames differ from the checkpoint's, the run goes on from the
        same position in the new order, with a warning: it no longer repeats the interrupted run.
        """
        if not state or "epoch" not in state:
            return
        self._resume = (int(state["epoch"]), int(state["batches"]), state.get("epoch_batches"))
        self._resume_check = state

    def _check_resume(self) -> None:
        state = self._resume_check
        if state is None:
            return
        self._resume_check = None
        now = {name: len(ds) for name, ds in self._training_sets().items()}
        if state.get("seed") != self.hparams.seed or state.get("frames") != now:
            _log.warning(
                "resuming with other data than the checkpoint's (seed %s, frames %s; now seed %s, frames "
                "%s): the run goes on from epoch %d, batch %d of the new order and does not repeat the "
                "interrupted run",
                state.get("seed"), state.get("frames"), self.hparams.seed, now, *self._resume[:2],
            )

    def _training_sets(self) -> dict[str, FrameDataset]:
        """The augmented training datasets by loader name (empty before `setup`)."""
        raise NotImplementedError

    def _open_root(self, what: str):
        if self.hparams.root is None:
            raise DataError(f"no data: set --data.root to {what}")
        source = open_source(self.hparams.root, self.hparams.format)
        if not self.hparams.skip_corrupt and hasattr(source, "check_labels"):
            source.check_labels()  # a bad label stops the run now, not at some step in a worker
        return source

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """`Batch.to` with ``non_blocking`` on CUDA (Lightning passes it only to plain tensors), so
        copies from the loader's pinned memory do not stall the host."""
        if isinstance(batch, Batch):
            return batch.to(device, non_blocking=torch.device(device).type == "cuda")
        return super().transfer_batch_to_device(batch, device, dataloader_idx)


class DriveDataModule(FrameDataModule):
    """Batches of canonical, augmented frames for pretraining.

    val_root: a separate validation folder (else the last `val_fraction` of `root`'s frames).
    The other arguments: `FrameDataModule`.
    """

    def __init__(self, val_root: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.train_set: FrameDataset | None = None
        self.val_set: FrameDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Open the data and split it into training and validation frames (once)."""
        hp = self.hparams
        if self.train_set is not None:
            return
        source = self._open_root("a Waymo TFRecord folder, a team folder or a training cache")
        n = len(source) if hp.max_frames is None else min(len(source), hp.max_frames)
        if hp.val_root is not None:
            val_source = open_source(hp.val_root, hp.format)
            train_idx, val_idx = list(range(n)), list(range(len(val_source)))
        else:
            val_source = source
            n_val = held_out(n, hp.val_fraction)
            train_idx, val_idx = list(range(n - n_val)), list(range(n - n_val, n))
        if not train_idx:
            raise DataError(f"{hp.root}: no training frames (found {len(source)})")
        self.train_set = self._dataset([FrameSet(source, train_idx)], augmented=True)
        self.val_set = self._dataset([FrameSet(val_source, val_idx or train_idx[:1])], augmented=False)

    def _training_sets(self) -> dict[str, FrameDataset]:
        return {"train": self.train_set} if self.train_set is not None else {}

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches (`EpochSampler` order)."""
        self._check_resume()
        return self._train_loaders(self._training_sets())["train"]

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in order, not augmented."""
        return self._loader(self.val_set)


class FinetuneDataModule(FrameDataModule):
    """Batches of canonical target frames (+ optional source frames) for fine-tuning.

    Which frames (`drivetl.data._finetune_frames`): root is the fleet folder (team format, or anything
    `open_source` reads). train_split / val_split: team split names; val_fraction: held out when
    the folder has no `val_split`. labeled_fraction: seeded share of training frames whose labels
    are used; labeled_split_file: frame ids to use as labeled instead. unlabeled_split: a team
    split of extra label-free frames for self-training. source_root / source_format /
    source_max_frames / source_beam_resample / source_size_shift: the optional source frames.
    model_spec: the batches the model takes (`FinetuneModule.batch_spec`: the pretrained encoders'
    point columns, cameras and image size, the head's classes), which the spec fields of the config
    override; unlabeled: also serve the unlabeled frames in training (``{"labeled", "unlabeled"}``
    batches). The command line links both from the model when it builds the two. The other
    arguments: `FrameDataModule`.
    """

    def __init__(
        self,
        train_split: str | None = "train",
        val_split: str | None = "val",
        labeled_fraction: float = 1.0,
        labeled_split_file: str | None = None,
        unlabeled_split: str | None = None,
        source_root: str | None = None,
        source_format: Format = "auto",
        source_max_frames: int | None = None,
        source_beam_resample: bool = True,
        source_size_shift: bool = False,
        model_spec: BatchSpec | None = None,
        unlabeled: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.spec = self.batch_spec(model_spec or BatchSpec())
        if not 0.0 < labeled_fraction <= 1.0:
            raise ConfigError(f"data.labeled_fraction must lie in (0, 1], got {labeled_fraction}")
        self.frames: FinetuneFrames | None = None
        self._sets: dict[str, FrameDataset] = {}

    @property
    def counts(self) -> dict[str, int]:
        """Frames per set: labeled, unlabeled, val, norm, source (empty before `setup`)."""
        return self.frames.counts if self.frames is not None else {}

    @property
    def labeled_keys(self) -> list:
        """Ids of the labeled target frames (empty before `setup`, or when the source has none)."""
        return self.frames.labeled_keys if self.frames is not None else []

    @property
    def source_options(self) -> dict[str, Any]:
        """The `canonicalize` options of the source frames (empty without source frames)."""
        return self.frames.source_options if self.frames is not None else {}

    def setup(self, stage: str | None = None) -> None:
        """Choose the frames (labeled subset, unlabeled rest, validation, source) once."""
        if self._sets:
            return
        hp = self.hparams
        target = self._open_root("the team folder to fine-tune on")
        self.frames = f = select_frames(target, hp)
        self._sets = {
            "labeled": self._dataset(f.labeled, augmented=True),
            "unlabeled": self._dataset(f.unlabeled, augmented=True, stream=1),  # drawn apart from labeled
            "val": self._dataset(f.val, augmented=False),
            "norm": self._dataset(f.norm, augmented=False),
            "labeled_plain": self._dataset(f.labeled, augmented=False),
        }

    def _training_sets(self) -> dict[str, FrameDataset]:
        if not self._sets:
            return {}
        names = ("labeled", "unlabeled") if self.hparams.unlabeled else ("labeled",)
        return {name: self._sets[name] for name in names}

    def train_dataloader(self):
        """Labeled batches; with `unlabeled`, ``{"labeled": ..., "unlabeled": ...}`` loaders (each in
        `EpochSampler` order; Lightning cycles the shorter one within an epoch)."""
        if self.hparams.unlabeled and not len(self._sets["unlabeled"]):
            raise ConfigError(
                f"{self.hparams.root}: self-training needs unlabeled frames; set data.labeled_fraction < 1, "
                "data.labeled_split_file or data.unlabeled_split"
            )
        self._check_resume()
        loaders = self._train_loaders(self._training_sets())
        return loaders if self.hparams.unlabeled else loaders["labeled"]

    def val_dataloader(self) -> DataLoader:
        """The declared validation frames, in order, not augmented."""
        return self._loader(self._sets["val"])

    def norm_dataloader(self) -> DataLoader:
        """Every target training frame (labeled or not), un-augmented, in order: BatchNorm re-estimation."""
        return self._loader(self._sets["norm"])

    def calibration_dataloader(self) -> DataLoader:
        """The labeled target frames, un-augmented (no paste), in order: size recalibration."""
        return self._loader(self._sets["labeled_plain"])
