"""Receiving a large multipart upload without trusting it: the body streams to a file under
FOODLAB_HOME with a running count, so neither a lying Content-Length nor a chunked body can
put more than the limit on disk, and nothing is written before the token was checked."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from core.errors import (
    BadRequest,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
    UserError,
)

# Room for the multipart boundaries, part headers and small fields around the file itself.
FRAMING_ALLOWANCE = 16 * 1024


@dataclass(frozen=True)
class ReceivedFile:
    path: Path
    filename: str | None
    fields: dict[str, str]


def too_large(limit: int, field: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"upload exceeds the {limit}-byte limit (FOODLAB_MAX_UPLOAD_BYTES)", field
    )


class _FileToDisk(MultiPartParser):
    """Starlette's parser, its one file part written to `target` and cut off at `limit`."""

    def __init__(self, request: Request, target: Path, limit: int, field: str) -> None:
        super().__init__(
            request.headers,
            capped(request.stream(), limit + FRAMING_ALLOWANCE, lambda: too_large(limit, field)),
            max_files=1,
            max_fields=8,
        )
        self.target, self.limit, self.field = target, limit, field
        self.received = 0

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        upload = self._current_part.file
        if upload is not None:
            upload.file.close()  # the spooled temporary file: nothing was written to it yet
            upload.file = self.target.open("w+b")
            # Starlette types the list as its spooled files; it only ever calls close().
            self._files_to_close_on_error.append(upload.file)  # type: ignore[arg-type]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self.received += end - start
            if self.received > self.limit:
                raise too_large(self.limit, self.field)
        super().on_part_data(data, start, end)


async def capped(
    chunks: AsyncIterator[bytes], max_bytes: int, refuse: Callable[[], UserError]
) -> AsyncGenerator[bytes, None]:
    """The chunks, cut off with `refuse()` once more than `max_bytes` arrived: checked while
    streaming, so a body without (or lying about) its Content-Length is cut short too."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise refuse()
        yield chunk


def multipart_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of a multipart form (`openapi_extra` of a route that parses
    its own body, so that the document still says what to send)."""
    # No other fields: the routes refuse them (400), so the document must not invite them.
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


async def receive_file(request: Request, folder: Path, *, field: str, limit: int) -> ReceivedFile:
    """The multipart body's file `field` saved as folder/upload, with the small text fields.

    Refused before reading when the declared length is over the limit; while reading as soon
    as the count passes it. The caller removes `folder` whatever happens.
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"send the file as multipart/form-data in the field '{field}'", field
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FRAMING_ALLOWANCE:
        raise too_large(limit, field)
    parser = _FileToDisk(request, folder / "upload", limit, field)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart upload: {exc.message}", field) from None
    try:
        files = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
        if [key for key, _ in files] != [field]:
            raise InvalidInput(f"send exactly one file, in the field '{field}'", field)
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        return ReceivedFile(folder / "upload", files[0][1].filename, fields)
    finally:
        await form.close()
