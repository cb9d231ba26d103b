"""Decode and resize every image of a dataset once, into a memory-mapped uint8 array.

Decoding JPEGs every epoch is what usually starves an image model of data. Instead each image
is decoded once per (dataset, resize size), resized and centre-cropped to a square with the
serving code's own function, and stored as a row of `images.npy`. Jobs then read batches with
one memcpy each, and the OS page cache shares the array between concurrent jobs.

The folder name holds the dataset fingerprint, so any change to the files builds a new cache.
Building is guarded by a file lock (no duplicated work) and happens in a staging folder renamed
into place (readers never see a half-written cache, even if the builder dies).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.datasets import DatasetScan, SkippedFile
from core.images import ImageLimits
from core.settings import Settings, get_settings
from models.preprocess import decode_for_size, resize_shorter_and_center_crop

# Bump when the stored pixels would change (decoder settings, resize function).
CACHE_VERSION = 2  # 2: large JPEGs decoded at reduced scale (decode_for_size)


@dataclass(frozen=True)
class ImageCache:
    folder: Path
    images: np.ndarray  # (N, side, side, 3) uint8 memmap, row i = scan.files[i]
    decoded: np.ndarray  # (N,) bool: False for rows whose file could not be decoded
    skipped: list[SkippedFile]


def cache_folder(scan: DatasetScan, resize: int, side: int, cache_dir: Path) -> Path:
    key = f"{CACHE_VERSION}:{scan.fingerprint}:{resize}:{side}"
    return cache_dir / "images" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}-{side}px"


def open_image_cache(scan: DatasetScan, resize: int, side: int, cache_dir: Path) -> ImageCache:
    """Every image of `scan`, shorter side resized to `resize`, centre `side` x `side`.

    Built first if no job has built it yet; then shared by every job on this data and size.
    """
    folder = cache_folder(scan, resize, side, cache_dir)
    if not (folder / "meta.json").is_file():
        with _file_lock(folder.with_suffix(".lock")):
            if not (folder / "meta.json").is_file():  # another job may have built it meanwhile
                _build(scan, resize, side, folder)
    return _load(folder)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def decode_image(path: Path, resize: int, side: int, limits: ImageLimits) -> np.ndarray:
    """One image as a (side, side, 3) uint8 square, by the serving code's own function."""
    with warnings.catch_warnings():
        # Pillow's own bomb check only warns below 2x its limit; we apply ours exactly.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            if (problem := limits.problem(*image.size)) is not None:
                raise ValueError(problem)
            square = resize_shorter_and_center_crop(decode_for_size(image, resize), resize, side)
    return np.asarray(square, dtype=np.uint8)


def _decode_or_reason(path: Path, resize: int, side: int, limits: ImageLimits) -> np.ndarray | str:
    try:
        return decode_image(path, resize, side, limits)
    except Exception as exc:  # noqa: BLE001 - any undecodable file is skipped, never fatal
        return f"{type(exc).__name__}: {exc}"


def decode_threads(settings: Settings) -> int:
    # Pillow releases the GIL while decoding and resizing, so threads scale on real cores:
    # one per core this process may use (bench/train_throughput.py measures the build), and
    # no more than the API's per-request pixel budget holds full-size images.
    by_memory = settings.max_request_pixels // settings.max_image_pixels
    return max(1, min(len(os.sched_getaffinity(0)), by_memory))


def _build(scan: DatasetScan, resize: int, side: int, folder: Path) -> None:
    settings = get_settings()
    limits = ImageLimits.of(settings)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".build-"))
    try:
        images = np.lib.format.open_memmap(
            staging / "images.npy",
            mode="w+",
            dtype=np.uint8,
            shape=(len(scan.files), side, side, 3),
        )
        decoded = np.zeros(len(scan.files), dtype=bool)
        skipped = []
        paths = [scan.root / relative for relative in scan.files]
        with ThreadPoolExecutor(decode_threads(settings)) as pool:
            results = pool.map(lambda p: _decode_or_reason(p, resize, side, limits), paths)
            for row, (relative, result) in enumerate(zip(scan.files, results, strict=True)):
                if isinstance(result, str):
                    skipped.append({"path": relative, "reason": result})
                else:
                    images[row], decoded[row] = result, True
        images.flush()
        del images
        np.save(staging / "decoded.npy", decoded)
        meta = {
            "version": CACHE_VERSION,
            "fingerprint": scan.fingerprint,
            "resize": resize,
            "side": side,
            "files": list(scan.files),
            "skipped": skipped,
        }
        (staging / "meta.json").write_text(json.dumps(meta))
        staging.chmod(0o755)  # mkdtemp makes it private; jobs of other users share it
        if folder.exists():  # a leftover without meta.json: never completed
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load(folder: Path) -> ImageCache:
    meta = json.loads((folder / "meta.json").read_text())
    return ImageCache(
        folder=folder,
        images=np.load(folder / "images.npy", mmap_mode="r"),
        decoded=np.load(folder / "decoded.npy"),
        skipped=[SkippedFile(**item) for item in meta["skipped"]],
    )
