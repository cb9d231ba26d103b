"""TrivialAugment (Müller & Hutter, 2021; torchvision's TrivialAugmentWide) as batched tensor ops.

Each training image gets one operation, drawn uniformly from the wide set below, at a magnitude
drawn uniformly from 31 bins (signed operations flip sign half the time). The geometric
operations (shear, translate, rotate) are affine maps folded into the batch's crop transform
on the CPU, so the single `grid_sample` of the crop does them too; the colour operations run on
the device on float images in [0, 1], each computed for the whole batch and kept where an image
drew it (no data-dependent indexing, so no device sync). Formulas follow torchvision's
`transforms.v2.functional` (blend factors, posterize bits, solarize thresholds, equalize's
histogram rule); translation is relative to the image side (32 px at 224 px, TrivialAugmentWide's
absolute 32 px would move a 64 px image by half of it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BINS = 31
# Operation ids; the order is part of the draw (changing it changes every augmented batch).
OPERATIONS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
OP = {name: index for index, name in enumerate(OPERATIONS)}
SIGNED = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"} | {
    "brightness",
    "color",
    "contrast",
    "sharpness",
}
MAX_MAGNITUDE = {
    "shear_x": 0.99,
    "shear_y": 0.99,
    "translate_x": 32 / 224,  # fraction of the side
    "translate_y": 32 / 224,
    "rotate": 135.0,  # degrees
    "brightness": 0.99,
    "color": 0.99,
    "contrast": 0.99,
    "sharpness": 0.99,
}


def draw_operations(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) float [operation id, signed magnitude] per image, from the epoch's generator."""
    ops = torch.randint(len(OPERATIONS), (n,), generator=generator)
    bins = torch.randint(BINS, (n,), generator=generator).float()
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    scale = torch.tensor([MAX_MAGNITUDE.get(name, 0.0) for name in OPERATIONS])[ops]
    signed = torch.tensor([name in SIGNED for name in OPERATIONS])[ops]
    magnitude = torch.where(signed, scale * bins / (BINS - 1) * sign, bins)
    return torch.stack([ops.float(), magnitude], dim=1)


def geometric_maps(operations: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) maps from output to crop coordinates in [-1, 1]: identity but for the images
    that drew a shear, translation or rotation."""
    op, m = operations[:, 0].long(), operations[:, 1]
    n = op.shape[0]
    maps = torch.eye(3).repeat(n, 1, 1)
    maps[:, 0, 1] = torch.where(op == OP["shear_x"], m, 0.0)
    maps[:, 1, 0] = torch.where(op == OP["shear_y"], m, 0.0)
    maps[:, 0, 2] = torch.where(op == OP["translate_x"], 2 * m, 0.0)  # [-1, 1] spans 2 units
    maps[:, 1, 2] = torch.where(op == OP["translate_y"], 2 * m, 0.0)
    angle = torch.where(op == OP["rotate"], torch.deg2rad(m), 0.0)
    rotated = op == OP["rotate"]
    cos, sin = angle.cos(), angle.sin()
    maps[:, 0, 0] = torch.where(rotated, cos, maps[:, 0, 0])
    maps[:, 0, 1] = torch.where(rotated, -sin, maps[:, 0, 1])
    maps[:, 1, 0] = torch.where(rotated, sin, maps[:, 1, 0])
    maps[:, 1, 1] = torch.where(rotated, cos, maps[:, 1, 1])
    return maps


def fold_into_crops(theta: torch.Tensor, operations: torch.Tensor) -> torch.Tensor:
    """Crop maps (n, 2, 3) composed with each image's geometric operation: output -> op -> crop."""
    return theta @ geometric_maps(operations)


def _blend(images: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * images + (1 - factor) * degenerate).clamp(0, 1)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _blurred(images: torch.Tensor) -> torch.Tensor:
    """torchvision's sharpness degenerate: a 3x3 smoothing inside, the border pixels kept."""
    kernel = images.new_tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13
    channels = images.shape[1]
    smooth = F.conv2d(images, kernel.expand(channels, 1, 3, 3), groups=channels)
    out = images.clone()
    out[..., 1:-1, 1:-1] = smooth
    return out


def _levels(images: torch.Tensor) -> torch.Tensor:
    """The 8-bit levels of images in [0, 1] (as torchvision's float <-> uint8 conversion)."""
    return (images * 255).round().clamp(0, 255)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    step = torch.pow(2.0, 8 - bits)
    return torch.div(_levels(images), step, rounding_mode="floor") * step / 255


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    flat = high <= low  # a constant channel stays as it is
    scale = torch.where(flat, 1.0, 1 / (high - low).clamp(min=1e-12))
    return ((images - torch.where(flat, 0.0, low)) * scale).clamp(0, 1)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel (torchvision's rule, on 8-bit levels)."""
    n, c, h, w = images.shape
    levels = _levels(images).long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=images.device).scatter_add_(
        1, levels, torch.ones_like(levels, dtype=torch.float)
    )
    last = hist.gather(1, levels.amax(dim=1, keepdim=True))  # count of the top level
    step = torch.div(h * w - last, 255, rounding_mode="floor")
    lut = torch.div(hist.cumsum(dim=1) + step // 2, step.clamp(min=1), rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    equalized = lut.gather(1, levels).view(n, c, h, w) / 255
    return torch.where((step == 0).view(n, c, 1, 1), images, equalized)


def apply_colour_operations(images: torch.Tensor, operations: torch.Tensor) -> torch.Tensor:
    """Each image's colour operation (geometric ones were folded into the crop) on float NCHW
    images in [0, 1]."""
    op = operations[:, 0].long().view(-1, 1, 1, 1)
    m = operations[:, 1].to(images.dtype).view(-1, 1, 1, 1)
    factor = 1 + m
    results = {
        "brightness": lambda: _blend(images, torch.zeros_like(images), factor),
        "color": lambda: _blend(images, _grayscale(images), factor),
        "contrast": lambda: _blend(
            images, _grayscale(images).mean(dim=(1, 2, 3), keepdim=True), factor
        ),
        "sharpness": lambda: _blend(images, _blurred(images), factor),
        "posterize": lambda: posterize(images, 8 - torch.round(m * 6 / (BINS - 1))),
        "solarize": lambda: torch.where(images >= 1 - m / (BINS - 1), 1 - images, images),
        "autocontrast": lambda: autocontrast(images),
        "equalize": lambda: equalize(images),
    }
    out = images
    for name, compute in results.items():
        out = torch.where(op == OP[name], compute(), out)
    return out
