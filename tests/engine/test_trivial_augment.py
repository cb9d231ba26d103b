"""TrivialAugment, batched: each operation agrees with torchvision's, one operation per image,
labels untouched, the same draw from the same generator."""

from __future__ import annotations

import pytest
import torch

from workers.engine.augment import BatchTransform
from workers.engine.trivial_augment import (
    OP,
    OPERATIONS,
    apply_colour_operations,
    draw_operations,
    fold_into_crops,
)


def _tf():
    """torchvision's v2 functional ops, imported when a test runs: importing torchvision costs
    every test process three seconds of collection, and most never compare with it."""
    import torchvision.transforms.v2.functional as TF

    return TF


def _images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Float images on the 8-bit grid, so uint8 and float formulas can be compared exactly."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=generator).float() / 255


def _ops(name: str, magnitude: float, n: int = 4) -> torch.Tensor:
    return torch.tensor([[float(OP[name]), magnitude]] * n)


@pytest.mark.parametrize(
    ("name", "magnitude", "reference"),
    [
        ("brightness", 0.5, lambda x: _tf().adjust_brightness(x, 1.5)),
        ("brightness", -0.7, lambda x: _tf().adjust_brightness(x, 0.3)),
        ("color", 0.8, lambda x: _tf().adjust_saturation(x, 1.8)),
        ("contrast", -0.4, lambda x: _tf().adjust_contrast(x, 0.6)),
        ("sharpness", 0.9, lambda x: _tf().adjust_sharpness(x, 1.9)),
        ("autocontrast", 0.0, lambda x: _tf().autocontrast(x)),
        ("solarize", 12.0, lambda x: _tf().solarize(x, 1 - 12 / 30)),
    ],
)
def test_colour_operations_agree_with_torchvision(name, magnitude, reference) -> None:
    images = _images()
    out = apply_colour_operations(images, _ops(name, magnitude))
    torch.testing.assert_close(out, reference(images), atol=2e-6, rtol=0)


@pytest.mark.parametrize("bin_", [0, 7, 30])
def test_posterize_and_equalize_agree_with_torchvision_on_uint8(bin_: int) -> None:
    TF = _tf()
    images = _images()
    as_uint8 = (images * 255).round().to(torch.uint8)
    bits = 8 - round(bin_ * 6 / 30)
    posterized = apply_colour_operations(images, _ops("posterize", float(bin_)))
    assert torch.equal((posterized * 255).round().to(torch.uint8), TF.posterize(as_uint8, bits))
    equalized = apply_colour_operations(images, _ops("equalize", float(bin_)))
    expected = torch.stack([TF.equalize(image) for image in as_uint8])
    assert torch.equal((equalized * 255).round().to(torch.uint8), expected)


def test_each_image_gets_only_its_own_operation() -> None:
    images = _images(n=3)
    ops = torch.tensor([[OP["identity"], 0.0], [OP["solarize"], 30.0], [OP["shear_x"], 0.5]])
    out = apply_colour_operations(images, ops)
    assert torch.equal(out[0], images[0])  # identity
    assert not torch.equal(out[1], images[1])  # solarized (threshold 0: every pixel inverted)
    torch.testing.assert_close(out[1], 1 - images[1])
    assert torch.equal(out[2], images[2])  # geometric: done by the crop, not here


def test_rotation_is_folded_into_the_crop() -> None:
    """An identity crop composed with a 90 degree rotation turns the image by a quarter."""
    images = _images(n=1, size=8)
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    theta = fold_into_crops(identity, torch.tensor([[float(OP["rotate"]), 90.0]]))
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 8, 8], align_corners=False)
    turned = torch.nn.functional.grid_sample(images, grid, align_corners=False)
    torch.testing.assert_close(turned, torch.rot90(images, k=1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_draw_covers_every_operation_within_its_range_and_repeats() -> None:
    ops = draw_operations(4000, torch.Generator().manual_seed(1))
    assert set(ops[:, 0].long().tolist()) == set(range(len(OPERATIONS)))
    rotate = ops[ops[:, 0] == OP["rotate"], 1]
    assert rotate.abs().max() <= 135 and rotate.min() < 0 < rotate.max()
    posterize_bins = ops[ops[:, 0] == OP["posterize"], 1]
    assert posterize_bins.min() >= 0 and posterize_bins.max() <= 30
    again = draw_operations(4000, torch.Generator().manual_seed(1))
    assert torch.equal(ops, again)


def test_trivial_policy_keeps_labels_and_value_range() -> None:
    transform = BatchTransform(
        image_size=16,
        augmentation="trivial",
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        device=torch.device("cpu"),
        channels_last=False,
    )
    batch = (torch.rand(32, 20, 20, 3) * 255).to(torch.uint8)
    labels = torch.arange(32) % 5
    inputs, targets = transform.train_batch(batch, labels, 5, torch.Generator().manual_seed(0))
    assert inputs.shape == (32, 3, 16, 16) and torch.equal(targets, labels)
    # Normalised [0, 1] pixels: (x - 0.5) / 0.25 lies in [-2, 2].
    assert inputs.min() >= -2 - 1e-5 and inputs.max() <= 2 + 1e-5
    # The same generator state gives the same batch (resume-exact).
    again, _ = transform.train_batch(batch, labels, 5, torch.Generator().manual_seed(0))
    assert torch.equal(inputs, again)
