"""Image datasets on disk: scanning an ImageFolder tree and its fixed train/validation split.

A dataset is a folder of class subfolders (torchvision's ImageFolder layout). The split is a
manifest written once next to the data (or in the cache when the data is read-only), so that
every job on a dataset is compared on the same validation images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInput
from core.storage import atomic_write

# torchvision's IMG_EXTENSIONS, minus formats Pillow cannot always read.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MANIFEST_DIR = ".foodlab"  # hidden, so scanning never mistakes it for a class


class DatasetError(InvalidInput):
    """A dataset the user must fix; the message names the folder or file.

    `field` is where the dataset came from: "path" (a folder) unless told otherwise.
    """

    def __init__(
        self, message: str, path: Path | str | None = None, field: str = "path"
    ) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message, field)
        self.path = str(path) if path is not None else None
        self.message = message


@dataclass(frozen=True)
class SkippedFile:
    """An image that could not be used, and why (reported with the run, never a crash)."""

    path: str  # relative to the dataset root
    reason: str


@dataclass(frozen=True)
class DatasetScan:
    """The image files of an ImageFolder tree, sorted, with their class indexes."""

    root: Path
    class_names: tuple[str, ...]
    files: tuple[str, ...]  # POSIX paths relative to root
    labels: tuple[int, ...]
    fingerprint: str  # changes whenever a file is added, removed, renamed or rewritten


@dataclass(frozen=True)
class Split:
    """Indexes into DatasetScan.files for each side of the split."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    manifest: Path
    split_id: str  # hash of both file lists: equal ids mean the very same split


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _image_files(folder: Path) -> list[Path]:
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        found += [Path(parent, n) for n in sorted(names)
                  if _visible(n) and Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return found


def scan_dataset(root: Path) -> DatasetScan:
    """List the images of an ImageFolder tree; refuse fewer than 2 classes or an empty class."""
    if not root.is_dir():
        raise DatasetError("not a folder (expected <root>/<class>/<image>.jpg or a .zip)", root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p.name))
    if len(class_dirs) < 2:
        found = ", ".join(p.name for p in class_dirs) or "none"
        raise DatasetError(
            f"needs at least 2 class folders, found {len(class_dirs)} ({found}); "
            "expected layout <root>/<class>/<image>.jpg", root)
    files, labels, digest = [], [], hashlib.sha256()
    for label, class_dir in enumerate(class_dirs):
        images = _image_files(class_dir)
        if not images:
            allowed = " ".join(sorted(IMAGE_EXTENSIONS))
            raise DatasetError(f"class folder has no images (extensions: {allowed})", class_dir)
        for image in images:
            relative = image.relative_to(root).as_posix()
            stat = image.stat()
            # Size and mtime, not content: hashing every image on every job would be slow,
            # and any rewrite of a file changes its mtime.
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            files.append(relative)
            labels.append(label)
    return DatasetScan(root, tuple(p.name for p in class_dirs), tuple(files), tuple(labels),
                       digest.hexdigest())


def _split_rank(seed: int, relative: str) -> str:
    # Hash order, not a shuffled list: adding images to a class moves few others across.
    return hashlib.sha256(f"{seed}:{relative}".encode()).hexdigest()


def stratified_split(scan: DatasetScan, val_fraction: float, seed: int) -> tuple[list[str],
                                                                                 list[str]]:
    """(train files, val files): round(n * val_fraction) of each class to validation.

    Every class with 2 or more images keeps at least one image on each side.
    """
    train, val = [], []
    for label in range(len(scan.class_names)):
        members = [f for f, y in zip(scan.files, scan.labels, strict=True) if y == label]
        members.sort(key=lambda f: _split_rank(seed, f))
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        val += members[:n_val]
        train += members[n_val:]
    return sorted(train), sorted(val)


def _manifest_name(val_fraction: float, seed: int) -> str:
    return f"split-val{val_fraction:g}-seed{seed}.json"


def manifest_paths(scan: DatasetScan, val_fraction: float, seed: int,
                   cache_dir: Path) -> list[Path]:
    """Where the split manifest may live, preferred first: in the dataset, else in the cache."""
    name = _manifest_name(val_fraction, seed)
    return [scan.root / MANIFEST_DIR / name,
            cache_dir / "splits" / scan.fingerprint[:20] / name]


def _read_manifest(path: Path, scan: DatasetScan) -> dict | None:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    current = manifest.get("fingerprint") == scan.fingerprint
    return manifest if current and manifest.get("class_names") == list(scan.class_names) else None


def load_or_create_split(scan: DatasetScan, val_fraction: float, seed: int,
                         cache_dir: Path) -> Split:
    """The dataset's split for (val_fraction, seed), computing and writing it the first time.

    The manifest is rewritten when the dataset changes (its fingerprint is stored inside).
    Concurrent writers produce identical files and rename them into place, so racing is safe.
    """
    candidates = manifest_paths(scan, val_fraction, seed, cache_dir)
    for path in candidates:
        manifest = _read_manifest(path, scan)
        if manifest is not None:
            return _split_from(scan, manifest, path)
    train, val = stratified_split(scan, val_fraction, seed)
    manifest = {"version": 1, "val_fraction": val_fraction, "split_seed": seed,
                "fingerprint": scan.fingerprint, "class_names": list(scan.class_names),
                "train": train, "val": val}
    payload = json.dumps(manifest, indent=1).encode()
    for path in candidates:
        if path.is_relative_to(scan.root) and not _writable(scan.root):
            continue
        try:
            with atomic_write(path) as handle:
                handle.write(payload)
            path.chmod(0o644)  # other workers' users read it too
        except OSError:
            continue  # e.g. a read-only mount: fall back to the cache dir
        return _split_from(scan, manifest, path)
    raise DatasetError("cannot write the split manifest in the dataset or the cache folder",
                       candidates[-1])


def _writable(folder: Path) -> bool:
    """Write permission, read from the mode bits too: root passes os.access checks, but a
    folder marked r-x (a shared read-only dataset) is not ours to write into."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def _split_from(scan: DatasetScan, manifest: dict, path: Path) -> Split:
    index = {f: i for i, f in enumerate(scan.files)}
    split_id = hashlib.sha256(json.dumps([manifest["train"], manifest["val"]]).encode())
    return Split(tuple(index[f] for f in manifest["train"]),
                 tuple(index[f] for f in manifest["val"]), path, split_id.hexdigest()[:16])
