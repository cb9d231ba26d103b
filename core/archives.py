"""Datasets uploaded or given as a .zip: safe extraction, once per archive content.

An archive is unpacked into the cache under its SHA-256, so the same upload is unpacked once
and every job on it sees the same files (and hence the same split and image cache).
"""

from __future__ import annotations

import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

from core.datasets import DatasetError
from core.settings import get_settings
from core.storage import sha256_of

MAX_NAME_BYTES = 255  # one path component, as most filesystems allow
MAX_PATH_BYTES = 1024
# What zipfile, zlib and the filesystem raise on a malformed archive (bad CRC, offsets or
# headers, unsupported compression, encryption); each becomes a DatasetError naming the entry.
MALFORMED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    OverflowError,
)


def _shown(name: str, limit: int = 80) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "...")


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path, or None for entries to ignore; raises on unsafe paths."""
    raw = info.filename
    name = PurePosixPath(raw.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise DatasetError(f"unsafe path in archive: {_shown(raw)}")
    if "\0" in raw:
        raise DatasetError(f"NUL byte in an archive entry name: {_shown(raw)}")
    if len(raw.encode()) > MAX_PATH_BYTES or any(
        len(part.encode()) > MAX_NAME_BYTES for part in name.parts
    ):
        raise DatasetError(
            f"archive entry name too long (at most {MAX_NAME_BYTES} bytes per part, "
            f"{MAX_PATH_BYTES} in all): {_shown(raw)}"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"symbolic link in archive: {_shown(raw)}")
    if not name.parts:
        raise DatasetError(f"archive entry without a name: {_shown(raw)}")
    if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in name.parts):
        return None
    return name


def _members(zf: zipfile.ZipFile, max_files: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The file entries to unpack, refusing names that collide (twice the same file, or a file
    where another entry needs a folder)."""
    infos = zf.infolist()
    members = [(info, path) for info in infos if (path := _safe_member(info))]
    if len(members) > max_files:
        raise DatasetError(f"archive has {len(members)} files; the limit is {max_files}")
    files = {path for _, path in members}
    if len(files) < len(members):
        twice = Counter(path for _, path in members).most_common(1)[0][0]
        raise DatasetError(f"archive holds {_shown(str(twice))} more than once")
    folders = {parent for path in files for parent in path.parents}
    folders |= {PurePosixPath(info.filename.rstrip("/")) for info in infos if info.is_dir()}
    if clash := sorted(files & folders):
        raise DatasetError(f"archive holds {_shown(str(clash[0]))} as both a file and a folder")
    return members


def extract_zip(archive: Path, dest: Path, *, max_bytes: int, max_files: int) -> None:
    """Unpack `archive` into the empty folder `dest`, refusing path traversal, links and bombs.

    Sizes are counted as bytes are written, not trusted from the archive's headers.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except MALFORMED as exc:
        raise DatasetError(f"not a readable .zip ({_reason(exc)})", archive) from None
    with zf:
        try:
            members = _members(zf, max_files)
        except DatasetError as exc:
            raise DatasetError(exc.message, archive) from None
        written = 0
        for info, relative in members:
            target = dest.joinpath(*relative.parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, target.open("wb") as sink:
                    while block := source.read(1 << 20):
                        written += len(block)
                        if written > max_bytes:
                            raise DatasetError(
                                f"archive unpacks to more than {max_bytes} bytes", archive
                            )
                        sink.write(block)
            except DatasetError:
                raise
            except MALFORMED as exc:
                raise DatasetError(
                    f"archive entry {_shown(info.filename)} is malformed ({_reason(exc)})",
                    archive,
                ) from None


def _reason(exc: BaseException) -> str:
    # Without the server's paths: an OSError names the file it failed on.
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def dataset_root(folder: Path) -> Path:
    """Descend through lone wrapper folders (a zip of `my-dataset/` holds one top folder)."""
    while True:
        entries = _visible_entries(folder)
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        if any(entry.is_file() for entry in _visible_entries(entries[0])):
            return folder  # the lone folder holds images: it is a class, not a wrapper
        folder = entries[0]


def _visible_entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]


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
