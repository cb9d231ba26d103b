"""Image preprocessing shared by training, validation and serving, so all three see the same
pixels: resize the shorter side, centre-crop, scale to [0, 1], normalise per channel.

Plain PIL and numpy with torchvision's arithmetic (sizes, crop offsets), so serving does not
pay for importing torchvision; tests check the pixels equal torchvision's eval transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def upright_rgb(image: Image.Image) -> Image.Image:
    """Decoded pixels as a camera meant them: EXIF orientation applied, in RGB.

    Training and serving both call this, so a phone photo stored sideways looks the same to both.
    The image is decoded and turned in place, and an RGB image is returned as it is: for a
    40-megapixel upload each copy would cost another 120 MB (bench/hostile_limits.py).
    """
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_for_size(image: Image.Image, shorter_side: int) -> Image.Image:
    """`upright_rgb` of an opened image, decoded at the smallest JPEG scale that keeps at least
    `shorter_side` pixels on each side.

    libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: about a third of the CPU time for a
    12-megapixel phone photo and a 224 px model (bench/predict_latency.py), the crop within
    0.5/255 of a full decode on average. Training and serving both decode through here, so
    they see the same pixels.
    Other formats, and images already loaded, decode as they are.
    """
    draft_for_size(image, shorter_side)
    return upright_rgb(image)


def draft_for_size(image: Image.Image, shorter_side: int) -> tuple[int, int]:
    """Configure the decoder of an opened, not yet decoded image for the smallest JPEG scale
    that keeps `shorter_side` pixels; returns the size it will decode to (call it once)."""
    image.draft("RGB", (shorter_side, shorter_side))
    return image.size


def default_resize_size(image_size: int) -> int:
    """The usual ImageNet eval ratio: crop 87.5% of the resized image (224 -> 256)."""
    return round(image_size / 0.875)


def resize_shorter_and_center_crop(
    img: Image.Image, resize_size: int, crop_size: int
) -> Image.Image:
    """RGB, shorter side resized to `resize_size` (bilinear, antialiased), centre `crop_size`."""
    if resize_size < crop_size:
        raise ValueError(f"resize_size {resize_size} is smaller than crop_size {crop_size}")
    if img.mode != "RGB":  # convert() of an RGB image would copy every pixel
        img = img.convert("RGB")
    w, h = img.size
    # PIL's bilinear filter widens its support when shrinking, i.e. it is antialiased.
    if w <= h:
        size = (resize_size, int(resize_size * h / w))
    else:
        size = (int(resize_size * w / h), resize_size)
    img = img.resize(size, Image.Resampling.BILINEAR)
    left = int(round((size[0] - crop_size) / 2.0))
    top = int(round((size[1] - crop_size) / 2.0))
    return img.crop((left, top, left + crop_size, top + crop_size))


def to_normalized_tensor(
    images: Sequence[Image.Image],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Same-sized images -> float32 NCHW tensor (channels-last), (x / 255 - mean) / std."""
    if not images:
        raise ValueError("no images to convert")
    sizes = {img.size for img in images}
    if len(sizes) > 1:
        raise ValueError(f"images must share one size to form a batch, got {sorted(sizes)}")
    batch = torch.from_numpy(np.stack([np.asarray(img.convert("RGB")) for img in images]))
    scale = torch.tensor([1 / (255 * s) for s in std])
    shift = torch.tensor([m / s for m, s in zip(mean, std, strict=True)])
    # One multiply-add per value in the decoded NHWC layout (serving pays for every op); the
    # NCHW view of NHWC memory is channels-last, the layout the served model runs in.
    return (batch.float() * scale - shift).permute(0, 3, 1, 2)
