"""The seven kinds of malformed .zip an attacker (or a broken tool) sends, built byte by byte."""

from __future__ import annotations

import io
import struct
import zipfile

from PIL import Image


def jpeg_bytes(width: int, height: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade * 20 % 256, 90, 140)).save(buffer, "JPEG")
    return buffer.getvalue()


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def _valid_classes() -> list[tuple[str, bytes]]:
    return [(f"{cls}/{i}.jpg", jpeg_bytes(8, 8, i)) for cls in ("a", "b") for i in range(3)]


def _patch(data: bytes, old: bytes, new: bytes, which: int) -> bytes:
    """Replace the `which`-th occurrence of `old` (0: local header, 1: central directory)."""
    at = -1
    for _ in range(which + 1):
        at = data.index(old, at + 1)
    return data[:at] + new + data[at + len(old) :]


def file_then_folder() -> bytes:
    return _zip(_valid_classes() + [("a/x", b"file"), ("a/x/y.jpg", jpeg_bytes(8, 8, 9))])


def dot_entry() -> bytes:
    return _zip(_valid_classes() + [(".", b"x")])


def empty_name() -> bytes:
    return _zip(_valid_classes() + [("", b"x")])


def long_name() -> bytes:
    return _zip(_valid_classes() + [("a/" + "n" * 300 + ".jpg", jpeg_bytes(8, 8, 7))])


def header_name_differs() -> bytes:
    data = _zip(_valid_classes())
    return _patch(data, b"a/0.jpg", b"a/Z.jpg", 0)  # local header only


def bad_crc() -> bytes:
    data = _zip(_valid_classes())
    body = jpeg_bytes(8, 8, 0)
    at = data.index(body) + len(body) // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def bad_offsets() -> bytes:
    data = _zip(_valid_classes())
    # The first central-directory record's "relative offset of local header" (byte 42).
    cd = data.index(b"PK\x01\x02")
    return data[: cd + 42] + struct.pack("<I", 0x7FFFFFF0) + data[cd + 46 :]


MALFORMED = {
    "file then folder": file_then_folder,
    "entry named .": dot_entry,
    "empty name": empty_name,
    "300-character name": long_name,
    "header name differs": header_name_differs,
    "bad CRC": bad_crc,
    "bad offsets": bad_offsets,
}
