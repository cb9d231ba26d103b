"""Image datasets on disk: scanning an ImageFolder tree and its fixed train/validation split.

A dataset is a folder of class subfolders (torchvision's ImageFolder layout). The split is a
manifest written once under FOODLAB_HOME (never into the dataset), so that every job on a
dataset is compared on the same validation images, and scored on the same held-out test
images when it has a test part.
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
LEGACY_MANIFEST_DIR = ".foodlab"  # where old versions wrote manifests; hidden from scans


class DatasetError(InvalidInput):
    """A dataset the user must fix; the message names the folder or file.

    `field` is where the dataset came from: "path" (a folder) unless told otherwise.
    """

    def __init__(self, message: str, path: Path | str | None = None, field: str = "path") -> None:
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
    split_id: str  # hash of the file lists: equal ids mean the very same split
    test: tuple[int, ...] = ()  # held out: only the final evaluation of a job reads these


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _image_files(folder: Path) -> list[Path]:
    found, seen = [], set()
    for parent, dirs, names in os.walk(folder, followlinks=True):
        seen.add(os.path.realpath(parent))
        # A link back to a folder already walked would loop for ever: walk each folder once.
        dirs[:] = sorted(
            d for d in dirs if _visible(d) and os.path.realpath(os.path.join(parent, d)) not in seen
        )
        found += [
            Path(parent, n)
            for n in sorted(names)
            if _visible(n) and Path(n).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return found


def _check_confined(paths: list[Path], root: Path, confine_to: Path) -> None:
    """Refuse a dataset whose links lead outside `confine_to` (the server's datasets root):
    registering it would let a client read, and train on, any file of the server."""
    boundary = confine_to.resolve()
    for path in paths:
        if not path.resolve().is_relative_to(boundary):
            shown = path.relative_to(root).as_posix()
            raise DatasetError(f"{shown} is a link that leads outside the datasets root")


def scan_dataset(root: Path, confine_to: Path | None = None) -> DatasetScan:
    """List the images of an ImageFolder tree; refuse fewer than 2 classes or an empty class.

    With `confine_to`, every class folder and image must really lie under it (links included).
    """
    if not root.is_dir():
        raise DatasetError("not a folder (expected <root>/<class>/<image>.jpg or a .zip)", root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p.name))
    if len(class_dirs) < 2:
        found = ", ".join(p.name for p in class_dirs) or "none"
        raise DatasetError(
            f"needs at least 2 class folders, found {len(class_dirs)} ({found}); "
            "expected layout <root>/<class>/<image>.jpg",
            root,
        )
    files, labels, digest = [], [], hashlib.sha256()
    for label, class_dir in enumerate(class_dirs):
        images = _image_files(class_dir)
        if not images:
            allowed = " ".join(sorted(IMAGE_EXTENSIONS))
            raise DatasetError(f"class folder has no images (extensions: {allowed})", class_dir)
        if confine_to is not None:
            _check_confined([class_dir, *images], root, confine_to)
        for image in images:
            relative = image.relative_to(root).as_posix()
            stat = image.stat()
            # Size and mtime, not content: hashing every image on every job would be slow,
            # and any rewrite of a file changes its mtime.
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            files.append(relative)
            labels.append(label)
    return DatasetScan(
        root, tuple(p.name for p in class_dirs), tuple(files), tuple(labels), digest.hexdigest()
    )


def _split_rank(seed: int, relative: str) -> str:
    # Hash order, not a shuffled list: adding images to a class moves few others across.
    return hashlib.sha256(f"{seed}:{relative}".encode()).hexdigest()


def stratified_split(
    scan: DatasetScan, val_fraction: float, seed: int, test_fraction: float = 0.0
) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test files): round(n * fraction) of each class to validation and to test.

    Every class keeps at least one training and one validation image, and one test image when
    there is a test part and the class has 3 or more images. The test images are the first in
    hash order, so they do not depend on val_fraction.
    """
    train, val, test = [], [], []
    for label in range(len(scan.class_names)):
        members = [f for f, y in zip(scan.files, scan.labels, strict=True) if y == label]
        members.sort(key=lambda f: _split_rank(seed, f))
        n_test = 0
        if test_fraction > 0:
            n_test = max(min(max(round(len(members) * test_fraction), 1), len(members) - 2), 0)
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - n_test - 1)
        test += members[:n_test]
        val += members[n_test : n_test + n_val]
        train += members[n_test + n_val :]
    return sorted(train), sorted(val), sorted(test)


def _manifest_name(val_fraction: float, seed: int, test_fraction: float) -> str:
    test = f"-test{test_fraction:g}" if test_fraction > 0 else ""
    return f"split-val{val_fraction:g}{test}-seed{seed}.json"


def manifest_path(
    scan: DatasetScan, val_fraction: float, seed: int, cache_dir: Path, test_fraction: float = 0.0
) -> Path:
    """Where foodlab keeps the split: under its own cache, keyed by the dataset's fingerprint
    and the fractions. Never inside the dataset: ImageFolder readers would take a folder
    there for a class."""
    return (
        cache_dir
        / "splits"
        / scan.fingerprint[:20]
        / _manifest_name(val_fraction, seed, test_fraction)
    )


def legacy_manifest_path(scan: DatasetScan, val_fraction: float, seed: int) -> Path:
    """Where manifests used to be written (a writable dataset's `.foodlab/`): read, never
    written, so the splits of existing jobs stay what they were."""
    return scan.root / LEGACY_MANIFEST_DIR / _manifest_name(val_fraction, seed, 0.0)


def _read_manifest(path: Path, scan: DatasetScan) -> dict | None:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    current = manifest.get("fingerprint") == scan.fingerprint
    return manifest if current and manifest.get("class_names") == list(scan.class_names) else None


def load_or_create_split(
    scan: DatasetScan, val_fraction: float, seed: int, cache_dir: Path, test_fraction: float = 0.0
) -> Split:
    """The dataset's split for (val_fraction, test_fraction, seed), written the first time.

    The manifest is rewritten when the dataset changes (its fingerprint is stored inside).
    Concurrent writers produce identical files and rename them into place, so racing is safe.
    """
    path = manifest_path(scan, val_fraction, seed, cache_dir, test_fraction)
    readable = (
        [path] if test_fraction > 0 else [path, legacy_manifest_path(scan, val_fraction, seed)]
    )
    for candidate in readable:
        manifest = _read_manifest(candidate, scan)
        if manifest is not None:
            if candidate != path:  # adopt the old split in the new place
                _write_manifest(path, manifest)
            return _split_from(scan, manifest, path)
    train, val, test = stratified_split(scan, val_fraction, seed, test_fraction)
    manifest = {
        "version": 2,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_seed": seed,
        "fingerprint": scan.fingerprint,
        "class_names": list(scan.class_names),
        "train": train,
        "val": val,
        "test": test,
    }
    _write_manifest(path, manifest)
    return _split_from(scan, manifest, path)


def _write_manifest(path: Path, manifest: dict) -> None:
    try:
        with atomic_write(path) as handle:
            handle.write(json.dumps(manifest, indent=1).encode())
        path.chmod(0o644)  # other workers' users read it too
    except OSError as exc:
        raise DatasetError(f"cannot write the split manifest: {exc.strerror}", path) from None


def _split_from(scan: DatasetScan, manifest: dict, path: Path) -> Split:
    index = {f: i for i, f in enumerate(scan.files)}
    sides = [manifest["train"], manifest["val"]]
    if manifest.get("test"):  # a split without a test part keeps the id it always had
        sides.append(manifest["test"])
    split_id = hashlib.sha256(json.dumps(sides).encode()).hexdigest()[:16]
    return Split(
        tuple(index[f] for f in manifest["train"]),
        tuple(index[f] for f in manifest["val"]),
        path,
        split_id,
        tuple(index[f] for f in manifest.get("test", [])),
    )
