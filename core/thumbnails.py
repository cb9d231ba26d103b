"""Small JPEG previews of a dataset's first images per class, for the dashboard.

Thumbnails live under FOODLAB_HOME (`cache/thumbnails/<dataset>/<fingerprint>/`), never in the
dataset's own folder, and are bounded: at most `MAX_PER_CLASS` per class, each at most
`MAX_SIDE` pixels on its longer side. A changed folder has a new fingerprint, so stale previews
are never served.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from core.datasets import IMAGE_EXTENSIONS
from core.errors import NotFound
from core.images import ImageLimits, decode_slots
from core.storage import atomic_write

MAX_SIDE = 128
MAX_PER_CLASS = 8
JPEG_QUALITY = 80


class ThumbnailError(NotFound):
    """No such thumbnail (404); `field` names the path parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field)


def class_samples(class_dir: Path, count: int) -> list[Path]:
    """The first `count` images of a class folder, in the same sorted order as a scan."""
    found: list[Path] = []
    for parent, dirs, names in os.walk(class_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(parent, name))
                if len(found) == count:
                    return found
    return found


def thumbnail(
    *,
    dataset_root: Path,
    classes: list[str],
    class_index: int,
    index: int,
    cache_folder: Path,
    limits: ImageLimits,
    decodes: int,
) -> Path:
    """Path of the cached JPEG thumbnail of image `index` of class `class_index`, made once.

    The image must pass the same size rule as every other decode (`limits`), and at most
    `decodes` decodes run at once in the process (shared with /predict)."""
    if not 0 <= class_index < len(classes):
        raise ThumbnailError("class_index", f"must be between 0 and {len(classes) - 1}")
    if not 0 <= index < MAX_PER_CLASS:
        raise ThumbnailError("index", f"must be between 0 and {MAX_PER_CLASS - 1}")
    cached = cache_folder / f"{class_index}-{index}.jpg"
    if cached.is_file():
        return cached
    class_name = classes[class_index]
    samples = class_samples(dataset_root / class_name, index + 1)
    if index >= len(samples):
        raise ThumbnailError("index", f"class {class_name!r} has only {len(samples)} image(s)")
    with decode_slots(decodes):
        _write_jpeg(_shrink(samples[index], limits), cached)
    return cached


def _shrink(source: Path, limits: ImageLimits) -> Image.Image:
    try:
        with Image.open(source) as image:
            problem = limits.problem(image.width, image.height)
            if problem is None:
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale
                small = ImageOps.exif_transpose(image).convert("RGB")
                small.thumbnail((MAX_SIDE, MAX_SIDE))
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise ThumbnailError("index", f"{source.name} cannot be decoded: {exc}") from None
    if problem is not None:
        raise ThumbnailError("index", f"{source.name}: {problem}")
    return small


def _write_jpeg(image: Image.Image, target: Path) -> None:
    # Written beside the target and renamed: a concurrent reader never sees half a file.
    with atomic_write(target) as sink:
        image.save(sink, "JPEG", quality=JPEG_QUALITY)
