"""Training jobs: create (committed, then enqueued), list, inspect, metrics, cancel, delete."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse

import models
from core import repository as repo
from core.errors import Conflict, Unavailable
from core.job_factory import create_jobs
from core.queue import send_training
from core.specs import MAX_EPOCHS, RowId, RowOffset
from core.storage import job_dir, remove_tree
from core.tables import Job, JobStatus
from service.deps import JobDep, SessionDep, SettingsDep, TokenDep
from service.openapi import errors
from service.schemas import (
    CheckpointPublic,
    EpochMetricPublic,
    JobCreate,
    JobPublic,
    JobsPublic,
    MetricsPublic,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])
SORT_PATTERN = f"^-?({'|'.join(repo.JOB_SORT_KEYS)})$"


def live_queues(session: SessionDep, settings: SettingsDep) -> set[str]:
    """Queues with a worker seen within FOODLAB_STALE_AFTER_SECONDS (workers record it)."""
    return repo.live_queues(session=session, stale_after=settings.stale_after_seconds)


@router.post(
    "", status_code=201, response_model=JobPublic, dependencies=[TokenDep], responses=errors(404)
)
def create_job(
    body: JobCreate, session: SessionDep, settings: SettingsDep, response: Response
) -> JobPublic:
    jobs = create_jobs(
        session=session,
        request=body,
        canonical_options=models.canonical_options,
        weights_root=settings.weights_root,
    )
    session.commit()
    # Commit first, then enqueue: a worker must always find the row its message names.
    send_or_withdraw(session, settings, jobs)
    response.headers["Location"] = f"/jobs/{jobs[0].id}"
    return JobPublic.from_row(jobs[0], live_queues(session, settings))


def send_or_withdraw(session: SessionDep, settings: SettingsDep, jobs: list[Job]) -> None:
    """Send each job's message; with the broker down, delete the jobs again and answer 503,
    so a client that retries does not leave duplicates (a message already sent for a deleted
    job finds no row and is ignored)."""
    try:
        for job in jobs:
            send_training(settings, job.id, job.queue)
    except Exception as exc:  # noqa: BLE001 - kombu raises several types for an absent broker
        for job in jobs:
            repo.delete_job(session=session, job=job)
        session.commit()
        raise Unavailable(
            f"the job queue (broker) is unreachable, so no job was created; "
            f"try again when it is back ({type(exc).__name__}: {exc})",
            "broker",
        ) from None
    repo.mark_enqueued(session=session, job_ids=[job.id for job in jobs])
    session.commit()


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    settings: SettingsDep,
    status: JobStatus | None = None,
    architecture: str | None = None,
    dataset_id: RowId | None = None,
    group_id: str | None = None,
    offset: RowOffset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    sort: Annotated[
        str,
        Query(
            pattern=SORT_PATTERN,
            description=f"one of {', '.join(repo.JOB_SORT_KEYS)}; '-' in front: descending",
        ),
    ] = "-id",
) -> JobsPublic:
    rows, total = repo.list_jobs(
        session=session,
        status=status,
        architecture=architecture,
        dataset_id=dataset_id,
        group_id=group_id,
        offset=offset,
        limit=limit,
        sort=sort,
    )
    live = live_queues(session, settings)
    return JobsPublic(data=[JobPublic.from_row(job, live) for job in rows], count=total)


@router.get("/{job_id:int}", response_model=JobPublic)
def get_job(job: JobDep, session: SessionDep, settings: SettingsDep) -> JobPublic:
    return JobPublic.from_row(job, live_queues(session, settings))


@router.get(
    "/{job_id:int}/metrics",
    response_model=MetricsPublic,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}} | errors(404),
)
def get_metrics(
    job: JobDep,
    session: SessionDep,
    format: Literal["json", "csv"] = "json",
    offset: RowOffset = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EPOCHS)] = MAX_EPOCHS,
) -> MetricsPublic | PlainTextResponse:
    """One row per epoch, first epoch first; by default every epoch a job can have."""
    rows = [
        EpochMetricPublic.model_validate(row)
        for row in repo.job_metrics(session=session, job_id=job.id, offset=offset, limit=limit)
    ]
    if format == "csv":
        return PlainTextResponse(metrics_csv(rows), media_type="text/csv")
    total = repo.count_metrics(session=session, job_id=job.id)
    return MetricsPublic(job_id=job.id, data=rows, count=total)


def metrics_csv(rows: list[EpochMetricPublic]) -> str:
    """One line per epoch; gradient norms flattened to grad_norm_<stage> columns."""
    stages = sorted({stage for row in rows for stage in row.grad_norms})
    nested = {"grad_norms", "best_details"}
    scalar_fields = [name for name in EpochMetricPublic.model_fields if name not in nested]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(scalar_fields + [f"grad_norm_{stage}" for stage in stages])
    for row in rows:
        values = [getattr(row, name) for name in scalar_fields]
        writer.writerow(values + [row.grad_norms.get(stage, "") for stage in stages])
    return out.getvalue()


@router.get("/{job_id:int}/checkpoints", response_model=list[CheckpointPublic])
def get_checkpoints(
    job: JobDep, session: SessionDep, settings: SettingsDep
) -> list[CheckpointPublic]:
    return [
        CheckpointPublic.from_row(row, settings.home)
        for row in repo.job_checkpoints(session=session, job_id=job.id)
    ]


@router.post(
    "/{job_id:int}/cancel", response_model=JobPublic, dependencies=[TokenDep], responses=errors(409)
)
def cancel_job(job: JobDep, session: SessionDep, settings: SettingsDep) -> JobPublic:
    if job.status.finished:
        raise Conflict(f"job {job.id} is already {job.status.value}", "job_id")
    repo.request_cancel(session=session, job=job, stale_after=settings.stale_after_seconds)
    session.commit()
    return JobPublic.from_row(job, live_queues(session, settings))


@router.post(
    "/{job_id:int}/retry", response_model=JobPublic, dependencies=[TokenDep], responses=errors(409)
)
def retry_job(job: JobDep, session: SessionDep, settings: SettingsDep) -> JobPublic:
    """Queue a failed or cancelled job again; it resumes from its last checkpoint when that
    is compatible (same architecture, data and recipe), else the worker reports why not.
    With the broker down the job stays queued and the workers' sweeper sends it later."""
    if job.status not in (JobStatus.failed, JobStatus.cancelled):
        raise Conflict(
            f"job {job.id} is {job.status.value}; only failed or cancelled jobs can be retried",
            "job_id",
        )
    repo.retry_job(session=session, job=job)
    session.commit()
    try:
        send_training(settings, job.id, job.queue)
    except Exception:  # noqa: BLE001 - see the docstring
        return JobPublic.from_row(job)
    repo.mark_enqueued(session=session, job_ids=[job.id])
    session.commit()
    return JobPublic.from_row(job, live_queues(session, settings))


@router.delete("/{job_id:int}", status_code=204, dependencies=[TokenDep], responses=errors(409))
def delete_job(job: JobDep, session: SessionDep, settings: SettingsDep) -> Response:
    repo.settle_abandoned_cancel(session=session, job=job, stale_after=settings.stale_after_seconds)
    if not job.status.finished:
        raise Conflict(
            f"job {job.id} is {job.status.value}; cancel it and wait until it stops", "job_id"
        )
    repo.delete_job(session=session, job=job)
    session.commit()
    remove_tree(job_dir(settings.checkpoints_dir, job.id))
    return Response(status_code=204)
