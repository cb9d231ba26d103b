import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    decode_for_size,
    default_resize_size,
    resize_shorter_and_center_crop,
    to_normalized_tensor,
    upright_rgb,
)


def test_default_resize_size():
    assert default_resize_size(224) == 256
    assert default_resize_size(64) == 73


def test_resize_and_crop_converts_to_rgb():
    img = Image.new("L", (100, 50), color=128)
    out = resize_shorter_and_center_crop(img, 40, 32)
    assert out.mode == "RGB" and out.size == (32, 32)


def test_same_pixels_as_torchvision_eval_transform():
    import torchvision.transforms as T  # here, not at collection: it costs 3 s

    img = Image.fromarray(torch.randint(0, 256, (48, 80, 3), dtype=torch.uint8).numpy())
    ours = to_normalized_tensor([resize_shorter_and_center_crop(img, 37, 32)])
    reference = T.Compose(
        [T.Resize(37), T.CenterCrop(32), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )(img)
    assert ours.dtype == torch.float32 and ours.shape == (1, 3, 32, 32)
    torch.testing.assert_close(ours[0], reference)


def test_normalisation():
    mean_colour = tuple(round(m * 255) for m in IMAGENET_MEAN)
    batch = to_normalized_tensor([Image.new("RGB", (8, 8), mean_colour)] * 2)
    assert batch.shape == (2, 3, 8, 8)
    assert batch.abs().max() < 0.01


def test_batch_needs_one_size():
    with pytest.raises(ValueError, match="one size"):
        to_normalized_tensor([Image.new("RGB", (8, 8)), Image.new("RGB", (9, 8))])
    with pytest.raises(ValueError, match="no images"):
        to_normalized_tensor([])


def test_upright_rgb_applies_exif_orientation(tmp_path) -> None:
    pixels = Image.new("L", (4, 2), 0)
    pixels.putpixel((0, 0), 255)  # a bright top-left corner on a wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "sideways.jpg"
    pixels.save(path, exif=exif, quality=100)
    with Image.open(path) as stored:
        upright = upright_rgb(stored)
    assert upright.mode == "RGB" and upright.size == (2, 4)  # now tall
    assert upright.getpixel((1, 0))[0] > 200  # the bright corner moved to the top right


def _phone_photo(fmt: str, size: tuple[int, int] = (1600, 1200), orientation: int = 1) -> bytes:
    """A smooth gradient with texture, as a large camera file (EXIF orientation optional)."""
    x = np.linspace(0, 255, size[0], dtype=np.float32)
    y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None]
    noise = np.random.default_rng(0).normal(0, 12, (size[1], size[0]))
    channels = [x + 0 * y + noise, 0 * x + y + noise, (x + y) / 2 + noise]
    image = Image.fromarray(np.stack(channels, axis=-1).clip(0, 255).astype(np.uint8))
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(out, format=fmt, quality=92, exif=exif)
    return out.getvalue()


def test_large_jpegs_decode_at_reduced_scale_with_nearly_the_same_crop() -> None:
    data = _phone_photo("JPEG")
    reduced = decode_for_size(Image.open(io.BytesIO(data)), 256)
    assert min(reduced.size) >= 256 and reduced.size[0] < 1600  # 1/4 scale: 400x300
    full = upright_rgb(Image.open(io.BytesIO(data)))
    ours, reference = (
        np.asarray(resize_shorter_and_center_crop(image, 256, 224), float)
        for image in (reduced, full)
    )
    assert np.abs(ours - reference).mean() < 2  # out of 255


def test_reduced_decoding_keeps_the_orientation_and_leaves_other_formats_alone() -> None:
    sideways = decode_for_size(Image.open(io.BytesIO(_phone_photo("JPEG", orientation=6))), 256)
    assert sideways.size[1] > sideways.size[0] >= 256  # rotated to portrait, still >= 256
    png = decode_for_size(Image.open(io.BytesIO(_phone_photo("PNG", size=(640, 480)))), 100)
    assert png.size == (640, 480) and png.mode == "RGB"
