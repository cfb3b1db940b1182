"""What the demo builds and trains: its rigs, its detector, and the YAML configs of its runs.

The configs are written into the demo folder (``configs/*.yaml``) before each run, in the same
LightningCLI ``class_path``/``init_args`` shape as ``configs/pretrain`` and ``configs/finetune``,
so every number of the demo can be reproduced with ``drivetl pretrain``/``drivetl finetune``.

Sizing for a 2-core CPU: a slim pillar detector over ±25.6 m (0.4 m pillars; the first stage keeps
the pillar grid and the head sees all of it, 128 x 128 cells of 0.4 m, as PointPillars does),
classes vehicle and pedestrian, the detection objective only; the head regresses sizes relative to
per-class prior sizes, classifies the front of each box, and its backbone sees each pillar's highest
and lowest point (``height_features``) as heights above the local ground, the lowest point within
3.6 m (``ground_window`` 9 pillars), above which the head places each box's centre, as the configs
in configs/pretrain do.
The source rig is the Waymo-like rig's 64-beam top LiDAR (same beams, mounting and intensity
encoding, half the azimuth columns to halve the point count; no perimeter LiDARs, no cameras); the
fleet rig is ``fleet_xt32``'s LiDAR (32 beams, mounted lower and pitched, uint8 intensity; no camera).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

#: classes the demo detects
DEMO_CLASSES = ["vehicle", "pedestrian"]
_AUGMENT = {"rotation": 0.785, "scale": [0.95, 1.05], "flip_y": 0.5, "translation_std": [0.2, 0.2, 0.1]}
COLUMNS = ["x", "y", "z", "intensity", "elongation"]
#: object paste (`drivetl.data.paste`) inside the detector's range: a simulated street shows about
#: 9 vehicles and 6 pedestrians within +-25.6 m; pasting raises each labeled training frame to 16
#: and 12. Pretraining banks the objects of 60 source frames, fine-tuning those of every labeled
#: fleet frame (its own rig's points, so the bank stays in the fleet's domain). The area is the
#: detector's point range (`_paste`)
_PASTE_COUNTS = {"vehicle": 16, "pedestrian": 12}
#: the regions (`drivetl.sim.regions`) whose statistics the simulated streets draw from. The source
#: stands for Waymo's US cities; the fleet drives in Europe, so besides its other LiDAR the fleet
#: shows the largest gap reported between driving data sets, object size (Wang et al., CVPR 2020).
#: With the fleet in the source's region the rig file alone closed nearly all of the gap: adapted
#: 3D mAP 0.412 / 0.402 / 0.213 against source-only 0.412 / 0.360 / 0.235 at seeds 0-2
SOURCE_REGION = "us"
FLEET_REGION = "eu"
#: peak learning rate of fine-tuning from the pretrained model and of training from a random
#: initialization. With 800 pretraining steps 0.001 gave adapted 3D mAP 0.412 / 0.402 / 0.213 at
#: seeds 0-2 against 0.412 / 0.368 / 0.172 with 0.003 (seed 0 kept its start weights either way);
#: a random initialization needs the higher rate
FINETUNE_LR = 0.001
#: decay of the weight average fine-tuning validates and exports (`FinetuneModule.ema_decay`), for
#: the adapted and the from-scratch run alike. On the pretrained models of seeds 0-2 (double flip)
#: adapted 3D mAP went from 0.502 / 0.371 / 0.416 to 0.511 / 0.387 / 0.413 and scratch from 0.112 /
#: 0.351 / 0.186 to 0.151 / 0.357 / 0.112: a small gain, within the spread of the seeds
FINETUNE_EMA = 0.98
SCRATCH_LR = 0.003


def rigs_dir() -> Path:
    """The shipped rig files (configs/rigs beside the package)."""
    return Path(__file__).resolve().parents[2] / "configs" / "rigs"


def source_rig(columns_scale: float = 0.5):
    """The Waymo-like rig's TOP LiDAR alone, with `columns_scale` of its azimuth columns."""
    from drivetl.calib import load_rig

    rig = load_rig(rigs_dir() / "waymo_like.yaml")
    top = rig.lidar("TOP")
    top = dataclasses.replace(top, columns=max(64, int(round(top.columns * columns_scale))))
    return dataclasses.replace(rig, lidars=(top,), cameras=())


def fleet_rig():
    """fleet_xt32 without its camera."""
    from drivetl.calib import load_rig

    rig = load_rig(rigs_dir() / "fleet_xt32.yaml")
    return dataclasses.replace(rig, cameras=())


def detector_config() -> dict[str, Any]:
    return {
        "class_path": "drivetl.models.BEVDetector",
        "init_args": {
            "classes": list(DEMO_CLASSES),
            "head_channels": 24,
            "occupancy_head": False,
            "align_head": False,
            "size_priors": True,
            "direction_classifier": True,
            "lidar": {
                "class_path": "drivetl.models.LidarEncoder",
                "init_args": {
                    "voxel_size": [0.4, 0.4, 6.0],
                    "point_range": [-25.6, -25.6, -1.0, 25.6, 25.6, 5.0],
                    "pfn_channels": [16],
                    "use_elongation": True,
                    "height_features": True,
                    "ground_window": 9,
                    "widths": [16, 32, 48],
                    "depths": [1, 1, 1],
                    "strides": [1, 2, 2],
                    "out_channels": 24,
                    "out_stride": 1,
                },
            },
        },
    }


def _paste(bank_frames: int | None) -> dict[str, Any]:
    """``data.paste`` of the demo's LiDAR runs: `_PASTE_COUNTS` inside the detector's point range."""
    x0, y0, _, x1, y1, _ = detector_config()["init_args"]["lidar"]["init_args"]["point_range"]
    return {"counts": dict(_PASTE_COUNTS), "area": [x0, y0, x1, y1], "bank_frames": bank_frames}


def _trainer(root: Path, steps: int, val_every: int, seed: int) -> dict[str, Any]:
    return {
        "seed_everything": seed,
        "trainer": {
            "default_root_dir": str(root),
            "accelerator": "auto",
            "devices": 1,
            "max_steps": steps,
            "val_check_interval": val_every,
            "check_val_every_n_epoch": None,
            "log_every_n_steps": 10,
            "gradient_clip_val": 10.0,
            "num_sanity_val_steps": 0,
        },
    }


def pretrain_config(
    root: Path, data: Path, steps: int, batch_size: int, workers: int, seed: int, paste: bool = True
) -> dict:
    """Supervised pretraining on the source set (the last 10% of frames validate); `paste`: with
    object paste (the LiDAR-only runs; a camera would not see the pasted objects). Torch's threads
    leave a core to each loader worker (``cpu_threads: auto``): with the demo's one worker, whose
    numpy BLAS runs on one thread, one torch thread took 0.314 s a step against 0.379 s with two
    (`tools/bench_threads.py --workers 1`, load 0.56 at the start)."""
    cfg = _trainer(root, steps, max(1, steps // 2), seed)
    cfg["cpu_threads"] = "auto"
    cfg["model"] = {
        "class_path": "drivetl.train.PretrainModule",
        "init_args": {
            "objectives": {"detection": 1.0},
            "lr": 0.003,
            "warmup_steps": max(1, steps // 10),
            "detector": detector_config(),
        },
    }
    cfg["data"] = {
        "class_path": "drivetl.data.datamodule.DriveDataModule",
        "init_args": {
            "root": str(data),
            "format": "waymo",
            "val_fraction": 0.1,
            "classes": list(DEMO_CLASSES),
            "point_columns": list(COLUMNS),
            "augment": copy.deepcopy(_AUGMENT) | {"beam_dropout": 0.2},
            "batch_size": batch_size,
            "num_workers": workers,
            "seed": seed,
        },
    }
    if paste:
        cfg["data"]["init_args"]["paste"] = _paste(bank_frames=60)
    return cfg


def finetune_config(
    root: Path,
    pretrained: Path,
    data: Path,
    *,
    method: str,
    freeze: str,
    steps: int,
    labeled_fraction: float,
    batch_size: int,
    workers: int,
    seed: int,
    lr: float = FINETUNE_LR,
    paste: bool = True,
) -> dict:
    """Fine-tuning on the fleet set's labeled fraction (validation: its declared `val` split, four
    times per run; the checkpoint with the best mean 3D AP at Waymo's IoU thresholds is kept, its
    weights the running average `FINETUNE_EMA` makes);
    `paste`: the labeled frames receive objects of the other labeled frames."""
    cfg = _trainer(root, steps, max(1, steps // 4), seed)
    cfg["model"] = {
        "class_path": "drivetl.train.finetune.FinetuneModule",
        "init_args": {
            "pretrained": str(pretrained),
            "load_head": True,
            "method": method,
            "freeze": freeze,
            "rank": 8,
            "alpha": 16.0,
            "lr": lr,
            "warmup_steps": max(1, steps // 10),
            "selection": "val_ap",
            "val_matcher": "iou",
            "ema_decay": FINETUNE_EMA,
        },
    }
    cfg["data"] = {
        "class_path": "drivetl.data.datamodule.FinetuneDataModule",
        "init_args": {
            "root": str(data),
            "format": "team",
            "train_split": "train",
            "val_split": "val",
            "labeled_fraction": labeled_fraction,
            "augment": copy.deepcopy(_AUGMENT),
            "batch_size": batch_size,
            "num_workers": workers,
            "seed": seed,
        },
    }
    if paste:
        cfg["data"]["init_args"]["paste"] = _paste(bank_frames=None)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    import yaml

    from drivetl._io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_init_checkpoint(path: Path, seed: int) -> Path:
    """A randomly initialized detector saved like a pretraining checkpoint: the from-scratch run
    fine-tunes it (every tensor trains) with exactly the recipe of the adapted run."""
    import torch

    from drivetl._io import atomic_write
    from drivetl.models import instantiate
    from drivetl.models.checkpoint import detector_metadata

    torch.manual_seed(seed)
    spec = detector_config()
    det = instantiate(spec)
    seen = {"rigs": [], "columns": list(COLUMNS), "camera_names": [], "image_size": None}
    meta = detector_metadata(det, {"detector": spec}, seen)
    meta["task"] = "init"
    state = {f"model.{k}": v for k, v in det.state_dict().items()}
    with atomic_write(path, "wb") as f:
        torch.save({"state_dict": state, "drivetl": meta}, f)
    return path
