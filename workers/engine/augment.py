"""Training augmentation as batched tensor ops, on whatever device the batch is on.

Images arrive as the cached uint8 squares (resize_size x resize_size). One `grid_sample` per
batch does every image's random resized crop, flip and rotation, so there is no per-image
Python or PIL work in the training loop, and on a GPU the augmentation runs there too.
Random parameters are drawn on the CPU from the epoch's generator, so a batch is augmented
identically on any device and after a resume, and reach the device in one pinned,
non-blocking transfer per batch: the host never waits for the GPU to drain its queue.
Random erasing and mixup/cutmix (timm's) run on the device too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.specs import Augmentation

from .trivial_augment import apply_colour_operations, draw_operations, fold_into_crops


@dataclass(frozen=True)
class AugmentPolicy:
    scale: tuple[float, float]  # crop area as a fraction of the cached square
    ratio: tuple[float, float]  # crop aspect ratio (w / h)
    max_rotation: float  # degrees
    jitter: float  # brightness, contrast and saturation factors drawn from [1-j, 1+j]
    trivial: bool = False  # one TrivialAugment operation per image (trivial_augment.py)


# `standard` is torchvision's RandomResizedCrop + flip with a lighter crop scale (small
# datasets have little to spare) and light colour jitter; `strong` adds rotation and more.
POLICIES: dict[str, AugmentPolicy] = {
    "standard": AugmentPolicy(
        scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), max_rotation=0.0, jitter=0.2
    ),
    "strong": AugmentPolicy(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), max_rotation=20.0, jitter=0.4),
    # `standard`'s crop and flip, then TrivialAugmentWide's one random operation in place of
    # the fixed colour jitter (torchvision's and timm's recent ResNet recipes use it).
    "trivial": AugmentPolicy(
        scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), max_rotation=0.0, jitter=0.0, trivial=True
    ),
}


def center_offset(full: int, size: int) -> int:
    """Where a centred crop starts; rounds as torchvision's center_crop (and models.preprocess)."""
    return int(round((full - size) / 2.0))


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre `size` x `size` of an NCHW batch."""
    top = center_offset(images.shape[-2], size)
    left = center_offset(images.shape[-1], size)
    return images[..., top : top + size, left : left + size]


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
    return torch.stack(
        [
            torch.stack([width * flip * cos, -height * sin, centre_x], dim=1),
            torch.stack([width * flip * sin, height * cos, centre_y], dim=1),
        ],
        dim=1,
    )


def jitter_factors(n: int, strength: float, generator: torch.Generator) -> torch.Tensor:
    """(3, n) brightness, contrast and saturation factors drawn from [1-j, 1+j]."""
    return _uniform(3 * n, 1 - strength, 1 + strength, generator).view(3, n)


def erasing_boxes(n: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    """(n, 4) boxes (left, top, right, bottom in [0, 1]) for random erasing, as torchvision's
    RandomErasing draws them (area 2-33%, aspect 0.3-3.3); an empty box where none is drawn."""
    apply = torch.rand(n, generator=generator) < probability
    area = _uniform(n, 0.02, 1 / 3, generator)
    log_ratio = _uniform(n, math.log(0.3), math.log(1 / 0.3), generator)
    width = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0) * apply
    height = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0) * apply
    left = (1 - width) * torch.rand(n, generator=generator)
    top = (1 - height) * torch.rand(n, generator=generator)
    return torch.stack([left, top, left + width, top + height], dim=1)


def mixing_draw(
    mixup_alpha: float, cutmix_alpha: float, generator: torch.Generator
) -> torch.Tensor:
    """(6,) [use_cutmix, lam, box left, top, right, bottom] for one batch (timm's rule: mixup
    or cutmix, chosen evenly when both are on; lam ~ Beta(alpha, alpha))."""
    # Beta draws from Python's generator, seeded from the epoch's: reproducible, public API.
    rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
    cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or rng.random() < 0.5)
    alpha = cutmix_alpha if cutmix else mixup_alpha
    lam = rng.betavariate(alpha, alpha)
    box = [0.0, 0.0, 0.0, 0.0]
    if cutmix:  # a box of area 1 - lam around a uniform centre, clipped to the image
        cut = math.sqrt(1 - lam)
        cx, cy = rng.random(), rng.random()
        box = [
            max(cx - cut / 2, 0),
            max(cy - cut / 2, 0),
            min(cx + cut / 2, 1),
            min(cy + cut / 2, 1),
        ]
    return torch.tensor([float(cutmix), lam, *box])


def to_device_at_once(
    params: dict[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """Float CPU tensors moved in one transfer (pinned and non-blocking on CUDA), so a batch's
    random parameters never make the host wait for the GPU."""
    if device.type == "cpu":
        return params
    flat = torch.cat([t.reshape(-1) for t in params.values()])
    flat = flat.pin_memory().to(device, non_blocking=True)
    chunks = flat.split([t.numel() for t in params.values()])
    return {
        key: chunk.view(t.shape) for (key, t), chunk in zip(params.items(), chunks, strict=True)
    }


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation per image from (3, n) factors (torchvision's formulas,
    fixed order)."""
    brightness, contrast, saturation = factors.to(images.dtype).view(3, -1, 1, 1, 1)
    images = (images * brightness).clamp(0, 1)
    mean = _grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean).clamp(0, 1)
    gray = _grayscale(images)
    return ((images - gray) * saturation + gray).clamp(0, 1)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 1, h, w) booleans: True inside each image's box (fractions of the image)."""
    ys = (torch.arange(height, device=boxes.device) + 0.5) / height
    xs = (torch.arange(width, device=boxes.device) + 0.5) / width
    left, top, right, bottom = (b.view(-1, 1, 1, 1) for b in boxes.unbind(dim=1))
    inside_x = (xs.view(1, 1, 1, -1) >= left) & (xs.view(1, 1, 1, -1) < right)
    inside_y = (ys.view(1, 1, -1, 1) >= top) & (ys.view(1, 1, -1, 1) < bottom)
    return inside_x & inside_y


def supersampling(source: int, size: int) -> int:
    """How many samples per output pixel (per side) a crop of `size` from `source`-px squares
    takes: bilinear sampling reads only the 4 nearest source pixels, so a crop that shrinks
    its source by 2x or more (a `crop_source_scale` cache) would alias; averaging k x k
    samples per pixel is the antialiasing filter. 1 for the evaluation cache (72 -> 64)."""
    return max(1, round(source / size))


def augment(
    images: torch.Tensor, size: int, theta: torch.Tensor, jitter: torch.Tensor | None
) -> torch.Tensor:
    """Random resized crops of `size` from float NCHW images in [0, 1], then colour jitter."""
    k = supersampling(images.shape[-1], size)
    grid = F.affine_grid(
        theta.to(images.dtype),
        [images.shape[0], images.shape[1], size * k, size * k],
        align_corners=False,
    )
    # Reflection rather than black borders where a rotated crop leaves the image.
    crops = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    if k > 1:
        crops = F.avg_pool2d(crops, k)
    return crops if jitter is None else color_jitter(crops, jitter)


def mix(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, draw: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix of each image with its mirror in the batch (timm's pairing, no
    permutation to draw); targets are class probabilities that sum to one."""
    use_cutmix, lam, box = draw[0], draw[1], draw[2:]
    partner = images.flip(0)
    mask = box_masks(box.view(1, 4), images.shape[-2], images.shape[-1])
    # Cutmix: lam is the share of the image left uncovered, measured on the pixel grid.
    covered = mask.float().mean()
    lam = torch.where(use_cutmix > 0, 1 - covered, lam)
    blended = torch.where(
        use_cutmix > 0, torch.where(mask, partner, images), lam * images + (1 - lam) * partner
    )
    one_hot = F.one_hot(labels, num_classes).float()
    return blended, lam * one_hot + (1 - lam) * one_hot.flip(0)


@dataclass(frozen=True)
class Regularisers:
    """Batch-level training regularisers beyond the crop policy (0 turns each off)."""

    random_erasing: float = 0.0  # probability per image
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @property
    def mixing(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


class BatchTransform:
    """uint8 NHWC batch -> normalised float NCHW on the device, augmented for training."""

    def __init__(
        self,
        *,
        image_size: int,
        augmentation: Augmentation,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        channels_last: bool,
        train_size: int | None = None,
        regularisers: Regularisers = Regularisers(),
    ) -> None:
        self.image_size = image_size
        self.train_size = train_size or image_size  # training crops may be smaller (FixRes)
        self.policy = POLICIES.get(augmentation)  # None: centre crop only
        self.regularisers = regularisers
        self.device = device
        self.channels_last = channels_last
        inv_std = 1.0 / torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.inv_std = inv_std
        self.shift = torch.tensor(mean, device=device).view(1, 3, 1, 1) * inv_std

    @property
    def needs_full_image(self) -> bool:
        """Whether the reader must deliver the whole cached square (else only the centre)."""
        return self.policy is not None

    def __call__(
        self, batch: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Augment when a generator is given (training), else centre-crop (evaluation)."""
        if generator is None:
            return self._finish(self._to_float(batch))
        params = to_device_at_once(self.draw(batch.shape[0], generator), self.device)
        return self._train_images(batch, params)

    def train_batch(
        self,
        batch: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs and their targets: class indexes, or class probabilities when
        mixup/cutmix is on."""
        params = to_device_at_once(self.draw(batch.shape[0], generator), self.device)
        inputs = self._train_images(batch, params)
        labels = labels.to(self.device, non_blocking=True)
        if "mixing" not in params:
            return inputs, labels
        inputs, targets = mix(inputs, labels, num_classes, params["mixing"])
        return inputs.contiguous(memory_format=self._memory_format), targets

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Every random parameter of a batch, on the CPU from the epoch's generator (so a batch
        is augmented identically on any device and after a resume)."""
        params = {}
        if self.policy is not None:
            params["theta"] = crop_transforms(n, self.policy, generator)
            if self.policy.trivial:
                params["trivial"] = draw_operations(n, generator)
                params["theta"] = fold_into_crops(params["theta"], params["trivial"])
            if self.policy.jitter > 0:
                params["jitter"] = jitter_factors(n, self.policy.jitter, generator)
        if self.regularisers.random_erasing > 0:
            params["erase"] = erasing_boxes(n, self.regularisers.random_erasing, generator)
        if self.regularisers.mixing:
            params["mixing"] = mixing_draw(
                self.regularisers.mixup_alpha, self.regularisers.cutmix_alpha, generator
            )
        return params

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _to_float(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)

    def _train_images(self, batch: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        images = self._to_float(batch)
        if "theta" in params:
            images = augment(images, self.train_size, params["theta"], params.get("jitter"))
            if "trivial" in params:
                images = apply_colour_operations(images, params["trivial"])
        elif images.shape[-1] != self.train_size:
            images = center_crop(images, self.train_size)
        images = images * self.inv_std - self.shift
        if "erase" in params:  # erased pixels take the mean colour: zero after normalising
            images = images.masked_fill(box_masks(params["erase"], *images.shape[-2:]), 0.0)
        return images.contiguous(memory_format=self._memory_format)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size:
            images = center_crop(images, self.image_size)
        images = images * self.inv_std - self.shift
        return images.contiguous(memory_format=self._memory_format)
