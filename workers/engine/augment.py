"""Training augmentation as batched tensor ops, on whatever device the batch is on.

Images arrive as the cached uint8 squares (resize_size x resize_size). One `grid_sample` per
batch does every image's random resized crop, flip and rotation, so there is no per-image
Python or PIL work in the training loop, and on a GPU the augmentation runs there too.
Random parameters are drawn on the CPU from the epoch's generator, so a batch is augmented
identically on any device and after a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.specs import Augmentation


@dataclass(frozen=True)
class AugmentPolicy:
    scale: tuple[float, float]  # crop area as a fraction of the cached square
    ratio: tuple[float, float]  # crop aspect ratio (w / h)
    max_rotation: float  # degrees
    jitter: float  # brightness, contrast and saturation factors drawn from [1-j, 1+j]


# `standard` is torchvision's RandomResizedCrop + flip with a lighter crop scale (small
# datasets have little to spare) and light colour jitter; `strong` adds rotation and more.
POLICIES: dict[str, AugmentPolicy] = {
    "standard": AugmentPolicy(scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), max_rotation=0.0,
                              jitter=0.2),
    "strong": AugmentPolicy(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), max_rotation=20.0,
                            jitter=0.4),
}


def center_offset(full: int, size: int) -> int:
    """Where a centred crop starts; rounds as torchvision's center_crop (and models.preprocess)."""
    return int(round((full - size) / 2.0))


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre `size` x `size` of an NCHW batch."""
    top = center_offset(images.shape[-2], size)
    left = center_offset(images.shape[-1], size)
    return images[..., top:top + size, left:left + size]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def crop_transforms(n: int, policy: AugmentPolicy, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine maps from output to input coordinates in [-1, 1]: crop, flip, rotate."""
    area = _uniform(n, *policy.scale, generator)
    log_ratio = _uniform(n, math.log(policy.ratio[0]), math.log(policy.ratio[1]), generator)
    # Half-widths in normalised units; clamping replaces torchvision's retry loop.
    width = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)
    height = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
    centre_x = (1 - width) * _uniform(n, -1, 1, generator)
    centre_y = (1 - height) * _uniform(n, -1, 1, generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    angle = torch.deg2rad(_uniform(n, -policy.max_rotation, policy.max_rotation, generator))
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([
        torch.stack([width * flip * cos, -height * sin, centre_x], dim=1),
        torch.stack([width * flip * sin, height * cos, centre_y], dim=1),
    ], dim=1)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast, saturation per image (torchvision's formulas, fixed order)."""
    if strength == 0:
        return images
    n = images.shape[0]
    factors = _uniform(3 * n, 1 - strength, 1 + strength, generator).view(3, n, 1, 1, 1)
    brightness, contrast, saturation = factors.to(images.device, images.dtype)
    images = (images * brightness).clamp(0, 1)
    mean = _grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean).clamp(0, 1)
    gray = _grayscale(images)
    return ((images - gray) * saturation + gray).clamp(0, 1)


def augment(images: torch.Tensor, size: int, policy: AugmentPolicy,
            generator: torch.Generator) -> torch.Tensor:
    """Random resized crops of `size` from float NCHW images in [0, 1], then colour jitter."""
    theta = crop_transforms(images.shape[0], policy, generator).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size],
                         align_corners=False)
    # Reflection rather than black borders where a rotated crop leaves the image.
    crops = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)
    return color_jitter(crops, policy.jitter, generator)


class BatchTransform:
    """uint8 NHWC batch -> normalised float NCHW on the device, augmented for training."""

    def __init__(self, *, image_size: int, augmentation: Augmentation, mean: tuple[float, ...],
                 std: tuple[float, ...], device: torch.device, channels_last: bool) -> None:
        self.image_size = image_size
        self.policy = POLICIES.get(augmentation)  # None: centre crop only
        self.device = device
        self.channels_last = channels_last
        inv_std = 1.0 / torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.inv_std = inv_std
        self.shift = torch.tensor(mean, device=device).view(1, 3, 1, 1) * inv_std

    @property
    def needs_full_image(self) -> bool:
        """Whether the reader must deliver the whole cached square (else only the centre)."""
        return self.policy is not None

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Augment when a generator is given (training), else centre-crop (evaluation)."""
        images = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        if self.policy is not None and generator is not None:
            images = augment(images, self.image_size, self.policy, generator)
        elif images.shape[-1] != self.image_size:
            images = center_crop(images, self.image_size)
        images = images * self.inv_std - self.shift
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.contiguous(memory_format=memory_format)
