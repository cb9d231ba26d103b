"""Turning a folder or an uploaded .zip into a registered dataset row.

Torch-free, so the API can inspect uploads without importing training code.
"""

from __future__ import annotations

import shutil
import uuid
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image
from sqlalchemy.orm import Session

from core import repository as repo
from core.archives import dataset_root, extract_zip
from core.datasets import DatasetError, DatasetScan, SkippedFile, load_or_create_split, scan_dataset
from core.images import ImageLimits
from core.settings import Settings
from core.tables import Dataset

DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
SKIPPED_KEPT = 20  # skipped files stored (and shown) per dataset; `skipped_count` says all


def undecodable(scan: DatasetScan, limits: ImageLimits) -> list[SkippedFile]:
    """Files that will be skipped: not decodable, or larger than the image limits."""
    skipped = []
    for relative in scan.files:
        reason = _image_problem(scan.root / relative, limits)
        if reason is not None:
            skipped.append(SkippedFile(relative, reason))
    return skipped


def _image_problem(path: Path, limits: ImageLimits) -> str | None:
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check only warns below 2x its limit; ours is applied exactly.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if (problem := limits.problem(*image.size)) is not None:
                    return problem
                image.verify()
    except Image.DecompressionBombError:
        return "too many pixels (decompression bomb?)"
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt files
        return f"cannot decode: {_short(str(exc) or type(exc).__name__)}"
    return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def class_counts(scan: DatasetScan, settings: Settings) -> dict[str, dict[str, int]]:
    """Images per class in total and on each side of the default split."""
    split = load_or_create_split(scan, DEFAULT_VAL_FRACTION, DEFAULT_SPLIT_SEED, settings.cache_dir)
    train = Counter(scan.labels[i] for i in split.train)
    val = Counter(scan.labels[i] for i in split.val)
    total = Counter(scan.labels)
    return {
        name: {"total": total[label], "train": train[label], "val": val[label]}
        for label, name in enumerate(scan.class_names)
    }


def register_folder(
    *,
    session: Session,
    settings: Settings,
    root: Path,
    name: str,
    source: str,
    confine_to: Path | None = None,
) -> Dataset:
    """Scan `root` (raises DatasetError when unusable) and store it as a dataset row.

    Registering an unchanged folder again returns its row, so that every job on the same
    files compares as one dataset. With `confine_to`, links may not lead outside it.
    """
    scan = scan_dataset(root, confine_to)
    existing = repo.find_dataset(session=session, path=str(root), fingerprint=scan.fingerprint)
    if existing is not None:
        return existing
    skipped = undecodable(scan, ImageLimits.of(settings))
    if len(skipped) == len(scan.files):
        raise DatasetError(
            f"none of its {len(scan.files)} image files can be decoded (first: "
            f"{skipped[0].path}: {skipped[0].reason})"
        )
    dataset = Dataset(
        name=name,
        path=str(root),
        source=source,
        fingerprint=scan.fingerprint,
        classes=list(scan.class_names),
        counts=class_counts(scan, settings),
        # The first few only: every listing returns them, and a count says how many in all.
        skipped=[{"file": item.path, "reason": item.reason} for item in skipped[:SKIPPED_KEPT]],
        num_images=len(scan.files) - len(skipped),
    )
    return repo.add_dataset(session=session, dataset=dataset)


def register_archive(*, session: Session, settings: Settings, archive: Path, name: str) -> Dataset:
    """Unpack an uploaded .zip under FOODLAB_HOME/datasets and register it.

    On any failure the unpacked files are removed; nothing already stored is touched.
    A bad archive is reported as the upload's fault (field "file"), never by its temporary path.
    """
    folder = settings.datasets_dir / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        extract_zip(
            archive,
            folder,
            max_bytes=settings.max_unpacked_bytes,
            max_files=settings.max_archive_files,
        )
        return register_folder(
            session=session,
            settings=settings,
            confine_to=folder,
            root=dataset_root(folder),
            name=name,
            source="upload",
        )
    except DatasetError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise DatasetError(f"uploaded file: {exc.message}", field="file") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
