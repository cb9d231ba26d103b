"""The recommended recipe's parts: mixup/cutmix, random erasing, smaller training crops, the
weight EMA that is evaluated and exported, warm-up counted in steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_testlib import tiny_spec

from core.specs import SpecError, resolve_hyperparameters
from models import build_model
from models.preprocess import default_resize_size
from workers.engine import train
from workers.engine.augment import (
    BatchTransform,
    Regularisers,
    augment,
    box_masks,
    mix,
    mixing_draw,
    supersampling,
)
from workers.engine.data import (
    batch_plan,
    cached_square_size,
    crop_source_size,
    iterate_batches,
    prepare_data,
)
from workers.engine.ema import WeightEma
from workers.engine.optim import lr_factor, warmup_steps

CPU = torch.device("cpu")


def _transform(**regularisers: float) -> BatchTransform:
    return BatchTransform(
        image_size=32,
        augmentation="standard",
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=CPU,
        channels_last=False,
        regularisers=Regularisers(**regularisers),
    )


def test_mixup_and_cutmix_targets_are_probabilities_matching_the_pixels():
    images = torch.rand(6, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    generator = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(20):
        draw = mixing_draw(0.4, 1.0, generator)
        mixed, targets = mix(images, labels, 3, draw)
        assert torch.allclose(targets.sum(dim=1), torch.ones(6))
        kept = 1 - box_masks(draw[2:].view(1, 4), 16, 16).float().mean()
        if draw[0] > 0:  # cutmix: the share of each image left uncovered is its weight
            seen.add("cutmix")
            partner = images.flip(0)
            from_partner = (mixed == partner) & (mixed != images)
            assert from_partner.float().mean() <= 1 - kept + 1e-6
            expected = kept * torch.eye(3)[labels] + (1 - kept) * torch.eye(3)[labels.flip(0)]
        else:  # mixup: the pixels are the same blend as the targets
            seen.add("mixup")
            weight = draw[1]
            assert torch.allclose(mixed, weight * images + (1 - weight) * images.flip(0))
            expected = weight * torch.eye(3)[labels] + (1 - weight) * torch.eye(3)[labels.flip(0)]
        assert torch.allclose(targets, expected, atol=1e-6)
    assert seen == {"mixup", "cutmix"}


def test_train_batches_keep_labels_and_erase_to_the_mean_colour():
    batch = torch.randint(0, 256, (8, 36, 36, 3), dtype=torch.uint8)
    labels = torch.arange(8) % 3
    erasing = _transform(random_erasing=1.0)
    inputs, targets = erasing.train_batch(batch, labels, 3, torch.Generator().manual_seed(0))
    assert torch.equal(targets, labels) and inputs.shape == (8, 3, 32, 32)
    # Every image has a box of exact zeros (the normalised mean colour).
    assert all((image == 0).all(dim=0).any() for image in inputs)
    mixing = _transform(mixup_alpha=0.2, cutmix_alpha=1.0)
    inputs, targets = mixing.train_batch(batch, labels, 3, torch.Generator().manual_seed(0))
    assert targets.shape == (8, 3) and torch.allclose(targets.sum(dim=1), torch.ones(8))
    again, same = mixing.train_batch(batch, labels, 3, torch.Generator().manual_seed(0))
    assert torch.equal(inputs, again) and torch.equal(targets, same)  # reproducible


def test_smaller_training_crops_follow_the_fraction():
    hp = resolve_hyperparameters("recommended", {"image_size": 64})
    assert hp.train_image_size == 64  # not in the preset: not measured to help yet
    fraction = {"train_size_fraction": 0.875}
    assert (
        resolve_hyperparameters("recommended", {"image_size": 64} | fraction).train_image_size == 56
    )
    assert (
        resolve_hyperparameters("recommended", {"image_size": 224} | fraction).train_image_size
        == 200
    )
    small = BatchTransform(
        image_size=32,
        augmentation="standard",
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        device=CPU,
        channels_last=False,
        train_size=24,
    )
    batch = torch.randint(0, 256, (2, 36, 36, 3), dtype=torch.uint8)
    assert small(batch, torch.Generator()).shape == (2, 3, 24, 24)
    assert small(batch).shape == (2, 3, 32, 32)  # evaluation at the full size
    with pytest.raises(SpecError, match="train_size_fraction"):
        resolve_hyperparameters("reference", {"train_size_fraction": 0.5})


def test_crops_from_a_twice_larger_source_are_antialiased():
    # A one-pixel checkerboard at the source's resolution, cropped whole to half its size with
    # the samples on source pixel centres (shifted by half a pixel): bilinear sampling alone
    # reads single pixels and turns it black (aliasing); the crop must average it to grey.
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    board = ((rows + cols) % 2).float().expand(2, 3, 64, 64)
    half_pixel = 1 / 64  # normalised units: a source pixel is 2/64
    whole_image = torch.tensor([[[1.0, 0.0, half_pixel], [0.0, 1.0, half_pixel]]]).expand(2, 2, 3)
    assert supersampling(64, 32) == 2 and supersampling(36, 32) == 1
    crops = augment(board, 32, whole_image, None)
    assert crops.shape == (2, 3, 32, 32)
    assert abs(crops.mean().item() - 0.5) < 0.01 and crops.std().item() < 0.05


def test_ema_warms_up_then_averages_weights_and_batch_norm_statistics():
    torch.manual_seed(0)
    model = build_model("resnet34", 2)
    ema = WeightEma(model, decay=0.9)
    with torch.no_grad():
        model.fc.weight.add_(1.0)
        model.bn1.running_mean.add_(2.0)
        model.bn1.num_batches_tracked.add_(5)
    start = ema.module.fc.weight.clone()
    ema.update(model)  # first update: decay (1 + 1) / (10 + 1), not 0.9
    weight = 2 / 11
    assert torch.allclose(ema.module.fc.weight, weight * start + (1 - weight) * model.fc.weight)
    assert torch.allclose(ema.module.bn1.running_mean, torch.full((64,), (1 - weight) * 2.0))
    assert ema.module.bn1.num_batches_tracked == model.bn1.num_batches_tracked
    assert not any(p.requires_grad for p in ema.module.parameters())


@pytest.mark.slow
def test_the_bundle_exports_the_ema_weights(easy_data: Path, tmp_path: Path, runs: Path):
    result = train(
        tiny_spec(epochs=1, image_size=16, momentum=0.9, lr=0.05, ema_epochs=1.0),
        easy_data,
        runs / "run",
        cache_dir=tmp_path / "cache",
    )
    best = torch.load(result.best_checkpoint, weights_only=True)
    bundle = torch.load(result.bundle, weights_only=True)["state_dict"]
    averaged, raw = best["ema"]["weights"], best["model"]
    assert best["ema"]["updates"] > 0
    assert all(torch.equal(bundle[key], averaged[key]) for key in averaged)
    assert not torch.equal(averaged["conv1.weight"], raw["conv1.weight"])


def test_warmup_in_steps_is_capped_at_a_third_of_the_run():
    hp = resolve_hyperparameters(
        "reference", {"scheduler": "cosine", "warmup_steps": 150, "epochs": 10}
    )
    assert warmup_steps(hp, steps_per_epoch=63) == 150
    assert warmup_steps(hp, steps_per_epoch=5) == 16  # a tiny dataset: 50 steps in all
    factors = [lr_factor(step, hp, steps_per_epoch=5) for step in range(50)]
    assert factors[0] == pytest.approx(1 / 16) and factors[15] == pytest.approx(1.0)
    assert max(factors) == pytest.approx(1.0) and factors[-1] < 0.01
    # Epochs asked for on top of a preset that counts in steps: the epochs count.
    both = resolve_hyperparameters("recommended", {"warmup_epochs": 1, "epochs": 5})
    assert warmup_steps(both, steps_per_epoch=5) == 5


def test_training_crops_come_from_the_larger_source_cache(easy_data: Path, tmp_path: Path):
    hp = resolve_hyperparameters(
        "reference", {"image_size": 32, "augmentation": "standard", "crop_source_scale": 1.5}
    )
    prepared = prepare_data(easy_data, hp, tmp_path / "cache")
    source = np.load(prepared.train_source_file, mmap_mode="r")
    side = crop_source_size(hp)
    assert side == round(default_resize_size(32) * 1.5) and source.shape[1:] == (side, side, 3)
    assert prepared.images.shape[1] == cached_square_size(32)  # evaluation: unchanged
    # The training reader gets the large squares; validation keeps serving's centre crop.
    plan = batch_plan(len(prepared.train), 4, torch.Generator().manual_seed(0))
    images, _ = next(
        iterate_batches(
            prepared,
            prepared.train,
            plan,
            crop=None,
            num_workers=0,
            pin_memory=False,
            source=prepared.train_source_file,
        )
    )
    assert images.shape[1:] == (side, side, 3)
    plain = resolve_hyperparameters("reference", {"image_size": 32, "augmentation": "standard"})
    assert prepare_data(easy_data, plain, tmp_path / "cache").train_source_file == (
        prepared.cache_file
    )
    with pytest.raises(SpecError, match="crop_source_scale"):
        resolve_hyperparameters("reference", {"crop_source_scale": 1.5})


@pytest.mark.slow
def test_a_run_with_a_larger_crop_source_resumes_exactly(
    easy_data: Path, tmp_path: Path, runs: Path
):
    options = {"image_size": 16, "augmentation": "standard", "crop_source_scale": 2.0}
    whole = train(tiny_spec(epochs=2, **options), easy_data, runs / "a", cache_dir=tmp_path / "c")
    train(tiny_spec(epochs=1, **options), easy_data, runs / "b", cache_dir=tmp_path / "c")
    resumed = train(tiny_spec(epochs=2, **options), easy_data, runs / "b", cache_dir=tmp_path / "c")
    assert [m.train_loss for m in resumed.epochs] == [m.train_loss for m in whole.epochs]
