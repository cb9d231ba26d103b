"""From a dataset path to batches of uint8 images: scan, split, cache, then plain indexing.

Batches are read from the memory-mapped cache (one memcpy per batch); all pixel work beyond
that happens on tensors in `augment.BatchTransform`, on the training device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.archives import resolve_dataset
from core.datasets import (
    DatasetError,
    DatasetScan,
    SkippedFile,
    load_or_create_split,
    scan_dataset,
)
from core.specs import Hyperparameters
from models.preprocess import default_resize_size

from .augment import center_offset
from .image_cache import open_image_cache


def cached_square_size(image_size: int) -> int:
    """Side of the cached squares: the resize size, trimmed so that (side - image_size) % 4 == 0.

    With an even margin on each side, centre-cropping `image_size` from the cached square
    lands on exactly the pixels that serving's single resize + centre crop picks (both round
    half-way offsets to even, and an even shift keeps that rounding in step). 256 for 224.
    """
    resize = default_resize_size(image_size)
    return image_size + (resize - image_size) // 4 * 4


@dataclass(frozen=True)
class Subset:
    """Rows of the image cache and their labels: one side of the split."""

    rows: np.ndarray  # int64 rows of PreparedData.images
    labels: np.ndarray  # int64 class indexes

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class PreparedData:
    class_names: list[str]
    images: np.ndarray  # (N, side, side, 3) uint8 memmap
    cache_file: Path
    train: Subset
    val: Subset
    test: Subset  # held out (empty without a test part): read only by `run.score_test`
    skipped: list[SkippedFile]
    fingerprint: str  # the dataset files (names, sizes, times)
    split_id: str  # the exact train/val file lists
    image_size: int
    resize_size: int  # what serving resizes the shorter side to
    train_source_file: Path  # where augmented training crops are cut from (may be cache_file)


def crop_source_size(hp: Hyperparameters) -> int:
    """Side of the squares that augmented training crops are cut from: the evaluation cache's,
    or the shorter side resized `crop_source_scale` times larger (the same field of view)."""
    if hp.crop_source_scale == 1:
        return cached_square_size(hp.image_size)
    return round(default_resize_size(hp.image_size) * hp.crop_source_scale)


def prepare_data(data: Path, hp: Hyperparameters, cache_dir: Path) -> PreparedData:
    """Scan `data` (a folder or .zip), load its split and its image cache (building both once)."""
    scan = scan_dataset(resolve_dataset(data, cache_dir))
    split = load_or_create_split(
        scan, hp.val_fraction, hp.split_seed, cache_dir, test_fraction=hp.test_fraction
    )
    cache = open_image_cache(
        scan, default_resize_size(hp.image_size), cached_square_size(hp.image_size), cache_dir
    )
    labels = np.asarray(scan.labels, dtype=np.int64)

    def subset(indexes: tuple[int, ...]) -> Subset:
        rows = np.asarray([i for i in indexes if cache.decoded[i]], dtype=np.int64)
        return Subset(rows, labels[rows])

    train, val, test = subset(split.train), subset(split.val), subset(split.test)
    if len(val) == 0:
        raise DatasetError(
            "too few decodable images for a validation split (a class needs at least 2)", scan.root
        )
    for label, name in enumerate(scan.class_names):
        if not np.any(train.labels == label):
            raise DatasetError(f"class {name!r} has no decodable training image", scan.root / name)
    return PreparedData(
        list(scan.class_names),
        cache.images,
        cache.folder / "images.npy",
        train,
        val,
        test,
        cache.skipped,
        scan.fingerprint,
        split.split_id,
        hp.image_size,
        default_resize_size(hp.image_size),
        _train_source(scan, hp, cache_dir) or cache.folder / "images.npy",
    )


def _train_source(scan: DatasetScan, hp: Hyperparameters, cache_dir: Path) -> Path | None:
    """The larger cache that training crops are cut from, when `crop_source_scale` asks."""
    if hp.crop_source_scale == 1:
        return None
    side = crop_source_size(hp)
    return open_image_cache(scan, side, side, cache_dir).folder / "images.npy"


class _BatchReader(Dataset):
    """Item i = batch i of a fixed plan, read from the cache (optionally only its centre).

    It holds the cache's path rather than the array, so worker processes open their own map.
    """

    def __init__(
        self, cache_file: Path, subset: Subset, plan: list[np.ndarray], crop: int | None
    ) -> None:
        self.cache_file, self.subset, self.plan, self.crop = cache_file, subset, plan, crop
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            self._images = np.load(self.cache_file, mmap_mode="r")
        positions = self.plan[index]
        rows = self.subset.rows[positions]
        if self.crop is None:
            pixels = self._images[rows]
        else:  # validation and un-augmented training never need the border
            top = center_offset(self._images.shape[1], self.crop)
            pixels = self._images[rows, top : top + self.crop, top : top + self.crop]
        return torch.from_numpy(np.ascontiguousarray(pixels)), torch.from_numpy(
            self.subset.labels[positions]
        )


def batch_plan(size: int, batch_size: int, generator: torch.Generator | None) -> list[np.ndarray]:
    """Positions of each batch: shuffled with `generator` (training) or in order (evaluation).

    When shuffling, a short last batch is dropped (as timm does): BatchNorm statistics of a
    handful of images are noisy enough to blow up the gradients. The images it would have
    held are in other batches next epoch. A dataset smaller than one batch is one batch.
    """
    order = (
        torch.randperm(size, generator=generator) if generator is not None else torch.arange(size)
    ).numpy()
    batches = [order[i : i + batch_size] for i in range(0, size, batch_size)]
    if generator is not None and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def iterate_batches(
    data: PreparedData,
    subset: Subset,
    plan: list[np.ndarray],
    *,
    crop: int | None,
    num_workers: int,
    pin_memory: bool,
    source: Path | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 NHWC images, int64 labels) per planned batch, read ahead by worker processes.

    The plan is fixed before reading, so the batches are the same for any number of workers.
    """
    reader = _BatchReader(source or data.cache_file, subset, plan, crop)
    loader = DataLoader(
        reader,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
    )
    yield from loader
