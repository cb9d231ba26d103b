"""Datasets: upload a .zip in ImageFolder layout, or register a folder under the server's root."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core import repository as repo
from core.dataset_registry import register_archive, register_folder
from core.errors import Conflict, Forbidden, InvalidInput
from core.images import ImageLimits
from core.settings import Settings
from core.specs import RowOffset
from core.tables import Dataset
from core.thumbnails import thumbnail
from service.deps import DatasetDep, SessionDep, SettingsDep, TokenDep
from service.openapi import errors
from service.schemas import DatasetPublic, DatasetRegister, DatasetsPublic
from service.uploads import multipart_body, receive_file

router = APIRouter(prefix="/datasets", tags=["datasets"])


UPLOAD_BODY = multipart_body(
    {
        "file": {
            "type": "string",
            "format": "binary",
            "description": ".zip of <class>/<image> folders",
        },
        "name": {"type": "string", "maxLength": 200},
    },
    required=["file"],
)


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    dependencies=[TokenDep],
    responses=errors(400, 413, 415),
    openapi_extra=UPLOAD_BODY,
)
async def upload_dataset(
    request: Request, session: SessionDep, settings: SettingsDep, response: Response
) -> DatasetPublic:
    """Upload a .zip in ImageFolder layout (multipart field `file`, optional field `name`)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=settings.home, prefix=".upload-"))
    try:
        received = await receive_file(
            request, staging, field="file", limit=settings.max_upload_bytes
        )
        name = received.fields.get("name") or _stem(received.filename)
        if len(name) > 200:
            raise InvalidInput("name: at most 200 characters", "name")
        dataset = await run_in_threadpool(_store_upload, session, settings, received.path, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    response.headers["Location"] = f"/datasets/{dataset.id}"
    return DatasetPublic.from_row(dataset)


def _store_upload(session: Session, settings: Settings, archive: Path, name: str) -> Dataset:
    dataset = register_archive(session=session, settings=settings, archive=archive, name=name)
    session.commit()
    return dataset


def _stem(filename: str | None) -> str:
    return Path(filename or "dataset.zip").stem[:200] or "dataset"


@router.post(
    "/register",
    status_code=201,
    response_model=DatasetPublic,
    responses=errors(403),
    dependencies=[TokenDep],
)
def register_server_folder(
    body: DatasetRegister, session: SessionDep, settings: SettingsDep, response: Response
) -> DatasetPublic:
    root = settings.datasets_root
    if root is None:
        raise Forbidden("registering server folders is disabled: set FOODLAB_DATASETS_ROOT", "path")
    try:
        folder = (root / body.path).resolve()
    except (OSError, RuntimeError):  # a link loop, a name too long for the filesystem
        raise InvalidInput("path: not a usable folder path", "path") from None
    if not folder.is_relative_to(root):
        raise Forbidden("path must stay under the datasets root (FOODLAB_DATASETS_ROOT)", "path")
    dataset = register_folder(
        session=session,
        settings=settings,
        root=folder,
        name=body.name or folder.name,
        source="folder",
        confine_to=root,
    )
    session.commit()
    response.headers["Location"] = f"/datasets/{dataset.id}"
    return DatasetPublic.from_row(dataset)


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    session: SessionDep,
    offset: RowOffset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DatasetsPublic:
    rows, total = repo.list_datasets(session=session, offset=offset, limit=limit)
    return DatasetsPublic(data=[DatasetPublic.from_row(row) for row in rows], count=total)


@router.get("/{dataset_id:int}", response_model=DatasetPublic)
def get_dataset(dataset: DatasetDep) -> DatasetPublic:
    return DatasetPublic.from_row(dataset)


@router.delete("/{dataset_id:int}", status_code=204, dependencies=[TokenDep], responses=errors(409))
def delete_dataset(dataset: DatasetDep, session: SessionDep, settings: SettingsDep) -> Response:
    """Forget a dataset with no jobs; an uploaded one's files go too, a registered folder stays."""
    jobs = repo.count_jobs(session=session, dataset_id=dataset.id)
    if jobs:
        raise Conflict(f"dataset {dataset.id} has {jobs} job(s); delete them first", "dataset_id")
    folder = Path(dataset.path)
    repo.delete_dataset(session=session, dataset=dataset)
    session.commit()  # the row goes first: files of a dataset still listed are never missing
    if dataset.source == "upload" and folder.is_relative_to(settings.datasets_dir):
        # The upload was unpacked into datasets/<id>/, possibly under a wrapper folder.
        shutil.rmtree(
            settings.datasets_dir / folder.relative_to(settings.datasets_dir).parts[0],
            ignore_errors=True,
        )
    return Response(status_code=204)


JPEG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "a JPEG image"}
}


@router.get(
    "/{dataset_id:int}/thumbnails/{class_index}/{index}",
    response_class=FileResponse,
    responses=JPEG,
)
def dataset_thumbnail(
    dataset: DatasetDep,
    class_index: int,
    index: int,
    settings: SettingsDep,
) -> FileResponse:
    """A JPEG preview (at most 128 px) of image `index` (0-7) of class `class_index` (its
    position in `classes`). Made once and cached under FOODLAB_HOME, never in the dataset."""
    cache = settings.cache_dir / "thumbnails" / str(dataset.id) / dataset.fingerprint[:16]
    path = thumbnail(
        dataset_root=Path(dataset.path),
        classes=list(dataset.classes),
        class_index=class_index,
        index=index,
        cache_folder=cache,
        limits=ImageLimits.of(settings),
        decodes=settings.max_concurrent_decodes,
    )
    return FileResponse(
        path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )
