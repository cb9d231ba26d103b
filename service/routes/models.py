"""Servable models: list them, say which one answers /predict, promote or un-promote one."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from core import repository as repo
from core import servable
from core.servable import Choice, SelectedBy, ServableModel
from core.specs import ArchitectureSpec, RowId, RowOffset
from service.deps import JobDep, ModelServerDep, SessionDep, TokenDep
from service.model_server import ModelServer
from service.openapi import errors

router = APIRouter(prefix="/models", tags=["models"])


class BundlePublic(BaseModel):
    size_bytes: int
    sha256: str
    created_at: datetime


class ModelPublic(BaseModel):
    job_id: int
    dataset_id: int
    architecture: ArchitectureSpec
    epoch: int = Field(description="the epoch whose weights serve (the best one)")
    val_accuracy: float | None
    val_loss: float | None
    finished_at: datetime | None
    promoted: bool
    promoted_at: datetime | None
    serving: bool = Field(description="answers /predict for its dataset now")
    bundle: BundlePublic

    @classmethod
    def from_model(cls, model: ServableModel, *, serving: bool) -> ModelPublic:
        job = model.job
        return cls(
            job_id=job.id,
            dataset_id=job.dataset_id,
            architecture=ArchitectureSpec(name=job.architecture, options=job.architecture_options),
            epoch=model.epoch,
            val_accuracy=job.best_val_accuracy,
            val_loss=job.best_val_loss,
            finished_at=job.finished_at,
            promoted=job.promoted_at is not None,
            promoted_at=job.promoted_at,
            serving=serving,
            bundle=BundlePublic.model_validate(model.bundle, from_attributes=True),
        )


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class ServingModelPublic(ModelPublic):
    selected_by: SelectedBy = Field(
        description="promoted, best (automatic: highest validation accuracy) or job_id (asked for)"
    )

    @classmethod
    def from_choice(cls, choice: Choice) -> ServingModelPublic:
        public = ModelPublic.from_model(choice.model, serving=choice.serving)
        return cls(**public.model_dump(), selected_by=choice.selected_by)


DatasetQuery = Annotated[
    RowId | None,
    Query(description="default: the dataset of the most recently finished servable job"),
]


@router.get("", response_model=ModelsPublic)
def list_models(
    session: SessionDep,
    server: ModelServerDep,
    dataset_id: Annotated[RowId | None, Query(description="default: every dataset")] = None,
    offset: RowOffset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ModelsPublic:
    """Succeeded jobs with an inference bundle, per dataset best first."""
    rows = servable.servable_models(
        session=session, dataset_id=dataset_id, offset=offset, limit=limit
    )
    cached = server.choices.at(session)
    chosen = (cached.choice(dataset) for dataset in {row.job.dataset_id for row in rows})
    serving_ids = {choice.model.job.id for choice in chosen if choice is not None}
    data = [ModelPublic.from_model(row, serving=row.job.id in serving_ids) for row in rows]
    return ModelsPublic(data=data, count=cached.count(dataset_id))


@router.get("/serving", response_model=ServingModelPublic, responses=errors(404, 409))
def get_serving(
    session: SessionDep, server: ModelServerDep, dataset_id: DatasetQuery = None
) -> ServingModelPublic:
    """The model that answers `POST /predict` (with the same `dataset_id`) right now."""
    choice = servable.resolve_choice(session=session, choices=server.choices, dataset_id=dataset_id)
    return ServingModelPublic.from_choice(choice)


@router.post(
    "/{job_id:int}/promote",
    response_model=ModelPublic,
    dependencies=[TokenDep],
    responses=errors(404, 409),
)
async def promote(job_id: RowId, session: SessionDep, server: ModelServerDep) -> ModelPublic:
    """Serve this job for its dataset from the next request on, whatever its accuracy."""
    model = await anyio.to_thread.run_sync(_load_and_promote, session, server, job_id)
    return ModelPublic.from_model(model, serving=True)


@router.delete(
    "/{job_id:int}/promote", status_code=204, dependencies=[TokenDep], responses=errors(404)
)
def unpromote(job: JobDep, session: SessionDep) -> Response:
    """Return the job's dataset to automatic selection (idempotent)."""
    if job.promoted_at is not None:
        repo.unpromote_job(session=session, job=job)
        session.commit()
    return Response(status_code=204)


def _load_and_promote(session: Session, server: ModelServer, job_id: int) -> ServableModel:
    model = servable.require_servable(session=session, job_id=job_id)
    # Loading first refuses a broken bundle (409) and warms the cache for the next request.
    server.cache.get(model)
    job = repo.require_job(session=session, job_id=job_id)
    repo.promote_job(session=session, job=job)
    session.commit()
    return replace(model, job=replace(model.job, promoted_at=job.promoted_at))
