"""Classify food photos with the serving model (or a given job's)."""

from __future__ import annotations

import asyncio
import io
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Annotated

import anyio
import torch
from fastapi import APIRouter, Query, Request
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

import models
from core import servable
from core.db import open_session
from core.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from core.images import ImageLimits, decode_slots
from core.settings import Settings
from core.specs import RowId
from models.preprocess import draft_for_size, upright_rgb
from service.bundle_cache import LoadedBundle
from service.deps import ModelServerDep, SettingsDep
from service.model_server import ModelServer
from service.openapi import errors
from service.routes.models import DatasetQuery, ServingModelPublic
from service.uploads import capped, multipart_body

router = APIRouter(prefix="/predict", tags=["predict"])

FIELD = "file"
FORMATS = ("JPEG", "PNG", "WEBP")  # the only decoders Pillow may try on an upload
# Room for multipart boundaries and part headers on top of the image bytes themselves.
FRAMING_ALLOWANCE = 64 * 1024

UPLOAD_BODY = multipart_body(
    {
        FIELD: {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "format": "binary"},
            "description": "JPEG, PNG or WebP images, classified as one batch",
        }
    },
    required=[FIELD],
)


class ClassProbability(BaseModel):
    class_name: str
    probability: float


class ImagePrediction(BaseModel):
    file: str
    top_k: list[ClassProbability] = Field(description="most probable first")


class PredictionsPublic(BaseModel):
    model: ServingModelPublic
    latency_ms: float = Field(description="server-side, from request received to answer")
    precision: str = Field(description="numeric precision of the forward pass (float32, bfloat16)")
    data: list[ImagePrediction]
    count: int


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


@router.post(
    "",
    response_model=PredictionsPublic,
    openapi_extra=UPLOAD_BODY,
    responses=errors(400, 404, 409, 413, 415),
)
async def predict(
    request: Request,
    settings: SettingsDep,
    server: ModelServerDep,
    top_k: Annotated[int, Query(ge=1, le=1000, description="capped at the class count")] = 3,
    job_id: Annotated[RowId | None, Query(description="default: the serving model")] = None,
    dataset_id: DatasetQuery = None,
) -> PredictionsPublic:
    """Top-k classes of each uploaded image (multipart field `file`, repeatable)."""
    started = time.perf_counter()
    uploads = await read_uploads(request, settings)
    prepared = await anyio.to_thread.run_sync(
        _prepare, uploads, settings, server, job_id, dataset_id
    )
    try:
        submitted = server.batcher.submit(prepared.loaded, prepared.pixels, top_k)
        top = await asyncio.wrap_future(submitted)
    except Exception as exc:  # noqa: BLE001 - a model that fails to run is the job's problem
        raise Conflict(
            f"the model of job {prepared.model.job_id} failed to run: {exc}", "job_id"
        ) from None
    data = [
        ImagePrediction(
            file=upload.name,
            top_k=[ClassProbability(class_name=c, probability=p) for c, p in ranked],
        )
        for upload, ranked in zip(uploads, top, strict=True)
    ]
    return PredictionsPublic(
        model=prepared.model,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
        precision=models.precision_of(prepared.loaded.bundle.model),
        data=data,
        count=len(data),
    )


@dataclass(frozen=True)
class Prepared:
    model: ServingModelPublic  # which model answers, as the response describes it
    loaded: LoadedBundle
    pixels: torch.Tensor


def _prepare(
    uploads: list[Upload],
    settings: Settings,
    server: ModelServer,
    job_id: int | None,
    dataset_id: int | None,
) -> Prepared:
    """Decode, choose and load the model, preprocess: every blocking step, database included,
    on one worker thread (each hop to a thread costs CPU that forward passes could use)."""
    limits = ImageLimits.of(settings)
    opened = [open_image(upload, limits) for upload in uploads]
    with closing(open_session(settings.database)) as session:
        # Resolved once per request: later promotions never change the model of this request.
        choice = servable.resolve_choice(
            session=session, choices=server.choices, job_id=job_id, dataset_id=dataset_id
        )
        model = ServingModelPublic.from_choice(choice)
    loaded = server.cache.get(choice.model)
    # The bundle's own preprocessing: image size and normalisation travel with the model.
    shorter_side = loaded.bundle.preprocessing["resize_size"]
    check_request_pixels(opened, shorter_side, settings.max_request_pixels)
    # One full-size image at a time per request, and a bounded number of requests decoding:
    # each image is cropped to the model's size before the next one is decoded.
    with decode_slots(settings.max_concurrent_decodes):
        pixels = []
        for upload, image in zip(uploads, opened, strict=True):
            pixels.append(loaded.bundle.preprocess([decode_opened(upload, image)]))
            image.close()  # its full-size pixels go now, not at the end of the request
    return Prepared(model, loaded, torch.cat(pixels))


# ---------------------------------------------------------------- uploads


async def read_uploads(request: Request, settings: Settings) -> list[Upload]:
    """The files of the multipart field `file`; 413 as soon as the body passes the limit."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            f"send the images as multipart/form-data in the field '{FIELD}'", FIELD
        )
    limit = settings.max_predict_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FRAMING_ALLOWANCE:
        raise _too_large(int(declared), limit)
    parser = MultiPartParser(
        request.headers,
        capped(request.stream(), limit + FRAMING_ALLOWANCE, lambda: _too_large(None, limit)),
        max_files=settings.max_predict_files,
        max_fields=16,
    )
    # The body is capped at `limit`, so files stay in memory: nothing of a request touches disk.
    parser.spool_max_size = limit + FRAMING_ALLOWANCE
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise BadRequest(
                f"too many files: at most {settings.max_predict_files} images per request",
                FIELD,
            ) from None
        raise BadRequest(f"malformed multipart upload: {exc.message}", FIELD) from None
    try:
        uploads = await _collect(form.multi_items())
    finally:
        await form.close()
    total = sum(len(upload.data) for upload in uploads)
    if total > limit:
        raise _too_large(total, limit)
    return uploads


async def _collect(items: list[tuple[str, str | UploadFile]]) -> list[Upload]:
    uploads: list[Upload] = []
    for name, value in items:
        if not isinstance(value, UploadFile):
            raise BadRequest(
                f"unexpected form field '{name}': options go in the query string "
                "(?top_k=, ?job_id=, ?dataset_id=)",
                name,
            )
        if name != FIELD:
            raise BadRequest(f"unexpected file field '{name}'; use '{FIELD}'", name)
        uploads.append(Upload(value.filename or f"file {len(uploads) + 1}", await value.read()))
    if not uploads:
        raise InvalidInput(f"no image: send one or more files in the field '{FIELD}'", FIELD)
    return uploads


def _too_large(size: int | None, limit: int) -> PayloadTooLarge:
    what = f"upload of {size} bytes is" if size is not None else "upload is"
    return PayloadTooLarge(f"{what} too large: at most {limit} bytes per request", FIELD)


# ---------------------------------------------------------------- decoding


def open_image(upload: Upload, limits: ImageLimits) -> Image.Image:
    """The upload opened as JPEG, PNG or WebP, its size checked on the header alone
    (nothing is decoded yet)."""
    try:
        image = Image.open(io.BytesIO(upload.data), formats=FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedMediaType(
            f"{upload.name}: not a decodable image; send JPEG, PNG or WebP", FIELD
        ) from None
    except Image.DecompressionBombError:
        raise BadRequest(f"{upload.name}: too many pixels (decompression bomb?)", FIELD) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise _corrupt(upload, exc) from None
    problem = limits.problem(*image.size)
    if problem is not None:
        raise BadRequest(f"{upload.name}: {problem}", FIELD)
    return image


def check_request_pixels(images: list[Image.Image], shorter_side: int, budget: int) -> None:
    """413 when the request's images together decode to more than `budget` pixels, counted at
    the scale each will decode at (JPEGs shrink in the decoder) before any is decoded."""
    total = 0
    for image in images:
        width, height = draft_for_size(image, shorter_side)
        total += width * height
    if total > budget:
        raise PayloadTooLarge(
            f"the images of this request decode to {total} pixels; at most {budget} per request",
            FIELD,
        )


def decode_opened(upload: Upload, image: Image.Image) -> Image.Image:
    """RGB pixels, upright as the EXIF says, at the scale `check_request_pixels` chose."""
    try:
        return upright_rgb(image)
    except Exception as exc:  # noqa: BLE001 - as above, now that the pixels are decoded
        raise _corrupt(upload, exc) from None


def _corrupt(upload: Upload, exc: Exception) -> BadRequest:
    reason = str(exc) or type(exc).__name__
    return BadRequest(f"{upload.name}: the image data is corrupt or truncated ({reason})", FIELD)
