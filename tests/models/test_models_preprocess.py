import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    default_resize_size,
    resize_shorter_and_center_crop,
    to_normalized_tensor,
)


def test_default_resize_size():
    assert default_resize_size(224) == 256
    assert default_resize_size(64) == 73


def test_resize_and_crop_converts_to_rgb():
    img = Image.new("L", (100, 50), color=128)
    out = resize_shorter_and_center_crop(img, 40, 32)
    assert out.mode == "RGB" and out.size == (32, 32)


def test_same_pixels_as_torchvision_eval_transform():
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
    from models.preprocess import upright_rgb

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
