"""Size recalibration of the head's priors on labeled target frames (`recalibrate_sizes`): the bias
estimate, the priors it moves, and the files that carry them (adapters, fine-tune checkpoints, resume)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from drivetl.errors import ConfigError
from drivetl.models.adapters import build_adapted, load_finetuned, save_adapters
from drivetl.train._size_priors import MIN_PAIRS, SizeBiasCounter
from drivetl.train.finetune import FinetuneModule
from drivetl.train.pretrain import PretrainModule
from tests.train.test_finetune_module import batch, detector_config, perturb, save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


def _boxes(n: int, length: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40 - 20
    xy[:, 0] = torch.arange(n) * 3.0 - 20  # at least 3 m apart: no label has two near detections
    size = torch.tensor([length, 1.9, 1.6]).expand(n, 3)
    return torch.cat([xy, torch.full((n, 1), 0.8), size, torch.zeros(n, 1)], 1)


def test_counter_takes_the_median_log_ratio_of_pairs_within_the_distance() -> None:
    counter = SizeBiasCounter(["vehicle", "pedestrian"], distance=1.0, score_threshold=0.3)
    gt = _boxes(8, 4.4)
    det = gt.clone()
    det[:, 3] = 4.4 * 1.1  # 10 % too long
    det[:, 0] += 0.5  # within 1 m
    det[-1, 3] = 9.0  # one outlier: the median ignores it
    # a better-scoring detection of another class and a far one of the same class never pair
    decoys = torch.cat([gt[:2].clone(), gt[2:4].clone()])
    decoys[:, 3] = 1.0
    decoys[2:, 0] += 1.5
    boxes = torch.cat([det, decoys])
    scores = torch.cat([torch.full((8,), 0.6), torch.full((4,), 0.9)])
    labels = torch.cat([torch.zeros(8), torch.ones(2), torch.zeros(2)]).long()
    counter.update(boxes, scores, labels, gt, torch.zeros(8, dtype=torch.long))
    # detections under the score threshold are ignored
    counter.update(gt.clone(), torch.full((8,), 0.2), torch.zeros(8).long(), gt, torch.zeros(8).long())
    bias = counter.compute()
    assert bias.pairs == (8, 0)
    assert bias.log_ratio[0] == pytest.approx((-math.log(1.1), 0.0, 0.0), abs=1e-6)
    assert bias.log_ratio[1] is None
    assert "pedestrian: unchanged (0 pairs" in bias.describe()
    assert "vehicle: length x0.909" in bias.describe()


def test_counter_leaves_a_class_with_too_few_pairs() -> None:
    counter = SizeBiasCounter(["vehicle"])
    gt = _boxes(MIN_PAIRS - 1, 4.0)
    zeros = torch.zeros(len(gt), dtype=torch.long)
    counter.update(gt.clone(), torch.ones(len(gt)), zeros, gt, zeros)
    assert counter.compute().log_ratio == (None,)
    counter.update(gt[:1].clone(), torch.ones(1), torch.zeros(1).long(), gt[:1], torch.zeros(1).long())
    assert counter.compute().log_ratio == ((0.0, 0.0, 0.0),)


@pytest.fixture(scope="module")
def priors_ckpt(tmp_path_factory):
    """A pretraining checkpoint whose head regresses sizes relative to priors (random head tensors:
    it fires on many cells, which is all the recalibration needs)."""
    cfg = detector_config(camera=False)
    cfg["init_args"]["size_priors"] = True
    torch.manual_seed(0)
    module = PretrainModule(cfg, objectives={"detection": 1.0})
    with torch.no_grad():
        for p in module.model.head.parameters():
            p.normal_()
    module._seen.update(columns=["x", "y", "z", "intensity"], rigs={"waymo_like"})
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(ckpt)
    path = tmp_path_factory.mktemp("pre") / "priors.ckpt"
    torch.save(ckpt, path)
    return path


def _scaled_labels(module: FinetuneModule, b, factor: tuple[float, float, float]):
    """`b` whose labels are the module's own detections (score >= 0.3, no other detection of their
    class within 1 m, so each pairs with its own) with sizes times `factor`."""
    module.model.eval()
    with torch.no_grad():
        dets = module(b).detections(score_threshold=0.3)
    boxes, labels = [], []
    for d in dets:
        near = torch.cdist(d.boxes[:, :2], d.boxes[:, :2]) <= 1.0
        near &= d.labels[:, None] == d.labels[None, :]
        alone = near.sum(1) == 1
        signs = torch.nonzero(alone & (d.labels == 3)).flatten()
        alone[signs[1:]] = False  # one sign label a frame: too few pairs to move its prior
        boxes.append(d.boxes[alone].float() * torch.tensor([1, 1, 1, *factor, 1]))
        labels.append(d.labels[alone])
    offsets = torch.tensor([0] + [len(x) for x in boxes]).cumsum(0)
    return dataclasses.replace(b, boxes=torch.cat(boxes), box_classes=torch.cat(labels), box_offsets=offsets)


def _sizes(module_or_model, b) -> torch.Tensor:
    module_or_model.eval()
    with torch.no_grad():
        dets = module_or_model(b).detections(score_threshold=0.3)
    return torch.cat([d.boxes[:, 3:6] for d in dets]), torch.cat([d.labels for d in dets])


def _module(ckpt) -> FinetuneModule:
    return FinetuneModule(pretrained=str(ckpt), method="lora", load_head=True, recalibrate_sizes=True)


def test_recalibration_scales_the_priors_and_the_files_carry_them(priors_ckpt, tmp_path) -> None:
    module = _module(priors_ckpt)
    b = batch()
    labeled = _scaled_labels(module, b, (0.8, 1.0, 1.25))
    before, labels = _sizes(module, b)
    counts = torch.bincount(labeled.box_classes, minlength=len(module.model.classes))
    classes = [c for c, n in enumerate(counts.tolist()) if n >= MIN_PAIRS]
    assert classes and len(classes) < len(counts), "the test needs classes with and without enough pairs"
    old_priors = module.model.head.log_priors.clone()
    bias = module.recalibrate_sizes([labeled])
    after, labels_after = _sizes(module, b)
    assert torch.equal(labels, labels_after)
    for c in range(len(module.model.classes)):
        rows = (labels == c) & (before.max(1).values < 100.0)  # random weights: some sizes hit the clamp
        want = torch.tensor([0.8, 1.0, 1.25]) if c in classes else torch.ones(3)
        ratio = after[rows] / before[rows]
        torch.testing.assert_close(ratio, want.expand_as(ratio), rtol=1e-4, atol=0)
        moved = module.model.head.log_priors[c] - old_priors[c]
        torch.testing.assert_close(moved.exp(), want, rtol=1e-5, atol=0)
        assert (bias.log_ratio[c] is not None) == (c in classes)
    # once only
    assert module.recalibrate_sizes([_scaled_labels(module, b, (2.0, 2.0, 2.0))]) is bias
    # the adapter file and the full checkpoint rebuild the recalibrated head
    perturb(module)
    module.model.eval()
    with torch.no_grad():
        want = module(b).regression, module(b).detections()[0].boxes
    file = tmp_path / "adapters.safetensors"
    save_adapters(module.model, file, module.adapter_metadata())
    rebuilt = build_adapted(priors_ckpt, file).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(b).detections()[0].boxes, want[1])
    full = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(full)
    assert full["drivetl"]["size_recalibration"]["pairs"] == list(bias.pairs)
    torch.save(full, tmp_path / "finetuned.ckpt")
    again = load_finetuned(tmp_path / "finetuned.ckpt").eval()
    with torch.no_grad():
        assert torch.equal(again(b).detections()[0].boxes, want[1])
    # a resumed run takes the priors from the checkpoint and does not recalibrate again
    resumed = _module(priors_ckpt)
    resumed.on_load_checkpoint(full)
    resumed.load_state_dict(full["state_dict"])
    assert torch.equal(resumed.model.head.log_priors, module.model.head.log_priors)
    assert resumed.size_bias == bias


def test_recalibration_needs_size_priors(tmp_path) -> None:
    plain = save_pretrained(tmp_path / "plain.ckpt")
    with pytest.raises(ConfigError, match="size_priors"):
        FinetuneModule(pretrained=str(plain), recalibrate_sizes=True)
