"""From a dataset path to batches of uint8 images: scan, split, cache, then plain indexing.

Batches are read from the memory-mapped cache (one memcpy per batch); all pixel work beyond
that happens on tensors in `augment.BatchTransform`, on the training device.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

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

# Batches the reader thread keeps ready ahead of the training thread (0: read on it).
PREFETCH_DEPTH = 2


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

    def _source(self) -> np.ndarray:
        """The cached squares, or (validation and un-augmented training never need the
        border) a view of their centres."""
        if self._images is None:
            self._images = np.load(self.cache_file, mmap_mode="r")
        if self.crop is None:
            return self._images
        top = center_offset(self._images.shape[1], self.crop)
        return self._images[:, top : top + self.crop, top : top + self.crop]

    def image_shape(self) -> tuple[int, ...]:
        return tuple(self._source().shape[1:])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = self.plan[index]
        pixels = self._source()[self.subset.rows[positions]]
        return torch.from_numpy(np.ascontiguousarray(pixels)), torch.from_numpy(
            self.subset.labels[positions]
        )

    def read_into(self, index: int, slot: _Slot) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` written into `slot`'s buffers (the same bytes as `self[index]`)."""
        positions = self.plan[index]
        size = len(positions)
        source, out = self._source(), slot.images[:size].numpy()
        for i, row in enumerate(self.subset.rows[positions]):  # one memcpy per image
            out[i] = source[row]
        slot.labels[:size].copy_(torch.from_numpy(self.subset.labels[positions]))
        return slot.images[:size], slot.labels[:size]


@dataclass
class _Slot:
    """Host buffers for one batch, reused from batch to batch."""

    images: torch.Tensor  # (max batch, *image shape) uint8; pinned when batches go to a GPU
    labels: torch.Tensor  # (max batch,) int64
    copied: torch.cuda.Event | None = field(default=None)  # the copies out of it are done


class BatchBuffers:
    """The slots of a run, kept across epochs: pinning memory is slow (the driver maps it),
    so each (shape, batch size) is pinned once. Pinned only when CUDA is the device: on the
    CPU pinning buys nothing."""

    def __init__(self, *, pin: bool) -> None:
        self.pin = pin
        self._free: dict[tuple[int, ...], list[_Slot]] = {}

    def take(self, count: int, batch: int, shape: tuple[int, ...]) -> list[_Slot]:
        kept = self._free.pop((batch, *shape), [])
        while len(kept) < count:
            kept.append(
                _Slot(
                    torch.empty((batch, *shape), dtype=torch.uint8, pin_memory=self.pin),
                    torch.empty(batch, dtype=torch.int64, pin_memory=self.pin),
                )
            )
        return kept

    def give(self, slots: list[_Slot], batch: int, shape: tuple[int, ...]) -> None:
        self._free[(batch, *shape)] = slots


_END = object()


@dataclass
class _Failed:
    error: BaseException


def _prefetched(
    reader: _BatchReader, depth: int, buffers: BatchBuffers
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of `reader`, read by a background thread up to `depth` batches ahead of
    the training thread into reused buffers. A batch's buffers are handed back when the
    next batch is asked for; with CUDA, an event recorded then tells the reader when the
    (non-blocking) copies out of them have run, before it overwrites them. An error in the
    reader is raised here; closing the generator (end, error, cancel) stops the thread."""
    batch = max(len(positions) for positions in reader.plan)
    shape = reader.image_shape()
    slots = buffers.take(depth + 2, batch, shape)  # depth queued, one in use, one filling
    free: queue.Queue[_Slot | None] = queue.Queue()
    for slot in slots:
        free.put(slot)
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for index in range(len(reader)):
                slot = free.get()
                if slot is None or stop.is_set():
                    return
                if slot.copied is not None:
                    slot.copied.synchronize()
                if not put((slot, reader.read_into(index, slot))):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - raised on the training thread
            put(_Failed(exc))

    thread = threading.Thread(target=work, name="batch-reader", daemon=True)
    thread.start()
    in_use: _Slot | None = None
    try:
        while True:
            item = ready.get()
            if in_use is not None:  # the training thread is done with the previous batch
                if buffers.pin:
                    in_use.copied = torch.cuda.Event()
                    in_use.copied.record()
                free.put(in_use)
                in_use = None
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            in_use, batch_tensors = cast(tuple[_Slot, tuple[torch.Tensor, torch.Tensor]], item)
            yield batch_tensors
    finally:
        stop.set()
        free.put(None)  # wakes a reader waiting for a slot
        thread.join()
        buffers.give(slots, batch, shape)


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
    buffers: BatchBuffers | None = None,
) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    """Yield (uint8 NHWC images, int64 labels) per planned batch, read ahead of the training
    thread: by a reader thread into `buffers` (reused; the batches are valid until the next
    one is asked for), or by `num_workers` worker processes.

    The plan is fixed before reading, so the batches are the same either way.
    """
    reader = _BatchReader(source or data.cache_file, subset, plan, crop)
    if num_workers == 0 and buffers is not None and PREFETCH_DEPTH > 0 and plan:
        yield from _prefetched(reader, PREFETCH_DEPTH, buffers)
        return
    loader = DataLoader(
        reader,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
    )
    yield from loader
