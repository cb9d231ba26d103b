"""Datasets uploaded or given as a .zip: safe extraction, once per archive content.

An archive is unpacked into the cache under its SHA-256, so the same upload is unpacked once
and every job on it sees the same files (and hence the same split and image cache).
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from core.datasets import DatasetError
from core.settings import get_settings
from core.storage import sha256_of


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path, or None for entries to ignore; raises on unsafe paths."""
    name = PurePosixPath(info.filename.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise DatasetError(f"unsafe path in archive: {info.filename!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"symbolic link in archive: {info.filename!r}")
    if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in name.parts):
        return None
    return name


def extract_zip(archive: Path, dest: Path, *, max_bytes: int, max_files: int) -> None:
    """Unpack `archive` into the empty folder `dest`, refusing path traversal, links and bombs.

    Sizes are counted as bytes are written, not trusted from the archive's headers.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"not a readable .zip ({exc})", archive) from None
    with zf:
        members = [(info, path) for info in zf.infolist() if (path := _safe_member(info))]
        if len(members) > max_files:
            raise DatasetError(
                f"archive has {len(members)} files; the limit is {max_files}", archive
            )
        written = 0
        for info, relative in members:
            target = dest.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, target.open("wb") as sink:
                while block := source.read(1 << 20):
                    written += len(block)
                    if written > max_bytes:
                        raise DatasetError(
                            f"archive unpacks to more than {max_bytes} bytes", archive
                        )
                    sink.write(block)


def dataset_root(folder: Path) -> Path:
    """Descend through lone wrapper folders (a zip of `my-dataset/` holds one top folder)."""
    while True:
        entries = [
            p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"
        ]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


def unpack_dataset(archive: Path, cache_dir: Path) -> Path:
    """The ImageFolder root of `archive`, unpacked once into cache_dir/archives/<sha256>/.

    Unpacking goes to a temporary folder renamed into place, so a concurrent job never sees a
    half-unpacked archive; whichever job renames first wins and the other discards its copy.
    """
    target = cache_dir / "archives" / sha256_of(archive)[:32]
    if not target.is_dir():
        settings = get_settings()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
        try:
            extract_zip(
                archive,
                staging,
                max_bytes=settings.max_unpacked_bytes,
                max_files=settings.max_archive_files,
            )
            staging.chmod(0o755)  # mkdtemp makes it private; jobs of other users share it
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dataset_root(target)


def resolve_dataset(data: Path, cache_dir: Path) -> Path:
    """The ImageFolder root for `data`: the folder itself, or a .zip unpacked into the cache."""
    if data.is_dir():
        return data
    if data.is_file() and zipfile.is_zipfile(data):
        return unpack_dataset(data, cache_dir)
    if data.exists():
        raise DatasetError("neither a folder nor a .zip archive", data)
    raise DatasetError("no such file or folder", data)
