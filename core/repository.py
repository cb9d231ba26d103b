"""Data access: small functions that take the session as a keyword argument and do one thing.

Both the API and the workers write through these, so each resource has one write path.
They flush, never commit: the caller (a request, a task step, a CLI command) owns the unit of
work and commits it, so several writes succeed or fail together. Compare-and-set functions
(`claim_job`, `hold_lease`, `requeue_if_stale`, `release_job`) take their row lock at once;
their callers commit right after, so that no other worker waits on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Executable, delete, func, or_, select, update
from sqlalchemy.orm import Session, defer

from core.errors import NotFound
from core.specs import EpochMetrics, JobRunInfo, TestMetrics
from core.tables import (
    Checkpoint,
    Dataset,
    EpochMetric,
    Job,
    JobStatus,
    Search,
    ServingGeneration,
    WorkerPresence,
    utcnow,
)

RowT = TypeVar("RowT")


def rows_changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE or DELETE and say how many rows it changed (compare-and-set checks)."""
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def get_dataset(*, session: Session, dataset_id: int) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def _require(session: Session, table: type[RowT], row_id: int, name: str) -> RowT:
    """The row, or NotFound naming the `<name>_id` it was asked by: one rule for every table."""
    row = session.get(table, row_id)
    if row is None:
        raise NotFound(f"{name} {row_id} not found", f"{name}_id")
    return row


def require_dataset(*, session: Session, dataset_id: int) -> Dataset:
    return _require(session, Dataset, dataset_id, "dataset")


def list_datasets(
    *, session: Session, offset: int = 0, limit: int = 100
) -> tuple[list[Dataset], int]:
    total = session.scalar(select(func.count(Dataset.id))) or 0
    # The folder path is the server's business: never sent, so never read.
    query = select(Dataset).options(defer(Dataset.path, raiseload=True))
    rows = session.scalars(query.order_by(Dataset.id).offset(offset).limit(limit))
    return list(rows), total


def add_dataset(*, session: Session, dataset: Dataset) -> Dataset:
    session.add(dataset)
    session.flush()
    return dataset


def find_dataset(*, session: Session, path: str, fingerprint: str) -> Dataset | None:
    query = select(Dataset).where(Dataset.path == path, Dataset.fingerprint == fingerprint)
    return session.scalars(query.order_by(Dataset.id).limit(1)).first()


def delete_dataset(*, session: Session, dataset: Dataset) -> None:
    session.delete(dataset)
    session.flush()


def get_job(*, session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def require_job(*, session: Session, job_id: int) -> Job:
    return _require(session, Job, job_id, "job")


def require_search(*, session: Session, search_id: int) -> Search:
    return _require(session, Search, search_id, "search")


def list_jobs(
    *,
    session: Session,
    status: JobStatus | None = None,
    architecture: str | None = None,
    dataset_id: int | None = None,
    group_id: str | None = None,
    offset: int = 0,
    limit: int = 50,
    sort: str = "-id",
) -> tuple[list[Job], int]:
    """A page of jobs and how many match; `sort` is a key of JOB_SORT_KEYS, '-' in front for
    descending. In the default order (-id) both walk an index, whatever the filters
    (migration 0006_read_indexes)."""
    filters = [
        column == value
        for column, value in (
            (Job.status, status),
            (Job.architecture, architecture),
            (Job.dataset_id, dataset_id),
            (Job.group_id, group_id),
        )
        if value is not None
    ]
    total = session.scalar(select(func.count(Job.id)).where(*filters)) or 0
    # run_info (split sizes, every skipped file) is not part of a listing: left unread.
    query = select(Job).options(defer(Job.run_info, raiseload=True)).where(*filters)
    rows = session.scalars(query.order_by(*job_order(sort)).offset(offset).limit(limit))
    return list(rows), total


def count_jobs(*, session: Session, dataset_id: int) -> int:
    return session.scalar(select(func.count(Job.id)).where(Job.dataset_id == dataset_id)) or 0


JOB_SORT_KEYS = {
    "id": Job.id,
    "created_at": Job.created_at,
    "started_at": Job.started_at,
    "finished_at": Job.finished_at,
    "status": Job.status,
    "architecture": Job.architecture,
    "dataset_id": Job.dataset_id,
    "best_val_accuracy": Job.best_val_accuracy,
    "num_parameters": Job.num_parameters,
    "gflops": Job.gflops,
}


def job_order(sort: str) -> list[Any]:
    """ORDER BY for a sort key; ties by id so pages never overlap.

    Missing values (a job not yet run) go last. Only nullable columns get NULLS LAST, so the
    default order (-id) stays one that a plain index on the key can serve.
    """
    descending = sort.startswith("-")
    column = JOB_SORT_KEYS[sort.removeprefix("-")]
    if column is Job.id:
        return [Job.id.desc() if descending else Job.id.asc()]
    primary = column.desc() if descending else column.asc()
    if column.property.columns[0].nullable:
        primary = primary.nulls_last()
    return [primary, Job.id.desc() if descending else Job.id.asc()]


def add_jobs(*, session: Session, jobs: list[Job]) -> list[Job]:
    session.add_all(jobs)
    session.flush()
    return jobs


def _claimable(stale_after: float) -> Any:
    """Queued, or running with a heartbeat older than `stale_after` (its worker is gone)."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    return or_(
        Job.status == JobStatus.queued,
        (Job.status == JobStatus.running) & (Job.heartbeat_at < cutoff),
    )


def claim_job(*, session: Session, job_id: int, worker: str, stale_after: float) -> int | None:
    """Atomically take a queued job, or a running one whose worker stopped heart-beating.

    Returns the claim's lease: the fencing token every later write of this worker must still
    hold (a worker that was only paused finds it taken and stops). None when the job is
    finished, cancelled, or alive elsewhere: a redelivered or duplicate message must then be
    ignored, not fail the job.
    """
    now = utcnow()
    lease = session.scalar(
        update(Job)
        .where(Job.id == job_id, _claimable(stale_after), Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.running,
            worker=worker,
            heartbeat_at=now,
            attempts=Job.attempts + 1,
            lease=Job.lease + 1,
            started_at=func.coalesce(Job.started_at, now),
            error_message=None,
            error_traceback=None,
            last_failure=None,
        )
        .returning(Job.lease)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return lease


def hold_lease(*, session: Session, job_id: int, lease: int) -> bool:
    """Refresh the heartbeat if the claim `lease` still owns the job.

    Every write of a worker runs in a transaction that starts with this: the UPDATE locks the
    row, so a competing claim either commits first (and this returns False) or waits and then
    sees a fresh heartbeat.
    """
    changed = rows_changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease == lease, Job.status == JobStatus.running)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    session.flush()
    return changed == 1


def heartbeat(*, session: Session, job_id: int, lease: int) -> bool:
    """Refresh the heartbeat; False if the job is no longer ours (taken over or finished)."""
    return hold_lease(session=session, job_id=job_id, lease=lease)


def stale_jobs(*, session: Session, stale_after: float, alive: str | None = None) -> list[int]:
    """Running jobs with an old heartbeat, except those of worker `alive` (the caller itself:
    after a database outage its heartbeat is old, yet it is plainly not dead)."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    query = select(Job.id).where(Job.status == JobStatus.running, Job.heartbeat_at < cutoff)
    if alive is not None:
        query = query.where(or_(Job.worker.is_(None), Job.worker != alive))
    return list(session.scalars(query))


def lost_attempt_cause(job: Job) -> str:
    """What is known about why the job's last attempt ended without a word."""
    if job.last_failure:
        return job.last_failure
    where = (
        f"during epoch {job.progress_epoch}"
        if job.progress_epoch
        else "before its first progress report"
    )
    return f"worker {job.worker} stopped heart-beating {where}"


def requeue_if_stale(
    *, session: Session, job_id: int, stale_after: float, max_attempts: int
) -> JobStatus | None:
    """Settle a job whose worker died (compare-and-set on the lease): back to `queued`, or
    `cancelled` if a cancel is pending, or `failed` once `max_attempts` workers died on it.

    Returns the new status, or None if the job was not stale (another reaper won, or it lives).
    """
    cutoff = utcnow() - timedelta(seconds=stale_after)
    job = session.scalar(
        select(Job).where(
            Job.id == job_id, Job.status == JobStatus.running, Job.heartbeat_at < cutoff
        )
    )
    if job is None:
        return None
    cause = lost_attempt_cause(job)
    if job.cancel_requested:
        values: dict[str, Any] = {"status": JobStatus.cancelled, "finished_at": utcnow()}
    elif job.attempts >= max_attempts:
        values = _exhausted(job.attempts, cause)
    else:
        values = {"status": JobStatus.queued, "last_failure": cause, "enqueued_at": None}
    changed = rows_changed(
        session,
        update(Job)
        .where(
            Job.id == job_id,
            Job.lease == job.lease,
            Job.status == JobStatus.running,
            Job.heartbeat_at < cutoff,
        )
        .values(worker=None, eta_seconds=None, **values)
        .execution_options(synchronize_session=False),
    )
    session.flush()
    return values["status"] if changed == 1 else None


def _exhausted(attempts: int, cause: str) -> dict[str, Any]:
    return {
        "status": JobStatus.failed,
        "finished_at": utcnow(),
        "error_message": f"the worker died {attempts} times while running this job "
        f"(FOODLAB_MAX_ATTEMPTS); last known cause: {cause}",
    }


def fail_if_exhausted(
    *, session: Session, job_id: int, stale_after: float, max_attempts: int
) -> bool:
    """Fail a claimable job that `max_attempts` workers already died on, instead of a new try."""
    job = session.scalar(
        select(Job).where(Job.id == job_id, _claimable(stale_after), Job.attempts >= max_attempts)
    )
    if job is None:
        return False
    changed = rows_changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease == job.lease, _claimable(stale_after))
        .values(worker=None, **_exhausted(job.attempts, lost_attempt_cause(job)))
        .execution_options(synchronize_session=False),
    )
    session.flush()
    return changed == 1


def release_job(
    *, session: Session, job_id: int, lease: int, reason: str, counts_as_attempt: bool
) -> bool:
    """Hand a job back to the queue from a worker that stops on purpose: it resumes from its
    last checkpoint. A shutdown is not the job's fault and does not count as an attempt (the
    lease still grows at the next claim); a lost DataLoader process does, like a lost worker."""
    attempts = Job.attempts if counts_as_attempt else Job.attempts - 1
    changed = rows_changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.lease == lease, Job.status == JobStatus.running)
        .values(
            status=JobStatus.queued,
            worker=None,
            heartbeat_at=None,
            eta_seconds=None,
            attempts=attempts,
            last_failure=reason,
            enqueued_at=None,
        )
        .execution_options(synchronize_session=False),
    )
    session.flush()
    return changed == 1


def unsent_jobs(
    *, session: Session, resend_after: float, skip_queues: Sequence[str] = ()
) -> list[Job]:
    """Queued jobs no message has named for `resend_after` seconds (the broker may have lost
    it, or sending failed): the sweeper sends them again; a duplicate is ignored at claim.
    Jobs in `skip_queues` are run by their own process, not through the broker."""
    cutoff = utcnow() - timedelta(seconds=resend_after)
    query = select(Job).where(
        Job.status == JobStatus.queued,
        Job.cancel_requested.is_(False),
        Job.queue.not_in(skip_queues),
        or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff),
    )
    return list(session.scalars(query.order_by(Job.id)))


def mark_enqueued(*, session: Session, job_ids: Sequence[int]) -> None:
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids))
        .values(enqueued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.flush()


def _set_job_columns(session: Session, job_id: int, **values: Any) -> None:
    # Private on purpose: callers use the named functions below, which say what changed.
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.flush()


def record_run_start(
    *,
    session: Session,
    job_id: int,
    device: str,
    num_parameters: int,
    gflops: float,
    run_info: JobRunInfo,
) -> None:
    """What the engine knows once data and model are ready: device, size, split, skipped files."""
    _set_job_columns(
        session,
        job_id,
        device=device,
        num_parameters=num_parameters,
        gflops=gflops,
        run_info=run_info.stored(),
    )


def record_progress(
    *,
    session: Session,
    job_id: int,
    epoch: int,
    batch: int,
    total_batches: int,
    percent: float,
    eta_seconds: float | None,
) -> None:
    _set_job_columns(
        session,
        job_id,
        progress_epoch=epoch,
        progress_batch=batch,
        progress_total_batches=total_batches,
        progress_percent=percent,
        eta_seconds=eta_seconds,
    )


def record_inference_latency(
    *,
    session: Session,
    job_id: int,
    inference_ms: float,
    device: str,
    threads: int,
    runs: int | None = None,
    load_average: float | None = None,
) -> None:
    """Kept in run_info beside what the run recorded, for comparisons."""
    job = session.get(Job, job_id)
    if job is None:
        return
    info = job.run_details.model_copy(
        update={
            "inference_ms": inference_ms,
            "inference_device": device,
            "inference_threads": threads,
            "inference_runs": runs,
            "inference_load_average": load_average,
        }
    )
    job.run_info = info.stored()
    session.flush()


def finish_job(
    *,
    session: Session,
    job_id: int,
    status: JobStatus,
    error: str | None = None,
    traceback: str | None = None,
    lease: int | None = None,
) -> bool:
    """Record how the job ended; with `lease`, only while that claim still owns it."""
    done = _completed_progress(job_id) if status == JobStatus.succeeded else {}
    query = update(Job).where(Job.id == job_id)
    if lease is not None:
        query = query.where(Job.lease == lease, Job.status == JobStatus.running)
    changed = rows_changed(
        session,
        query.values(
            status=status,
            finished_at=utcnow(),
            error_message=error,
            error_traceback=traceback,
            eta_seconds=None,
            **done,
        ).execution_options(synchronize_session=False),
    )
    session.flush()
    return changed == 1


def _completed_progress(job_id: int) -> dict[str, Any]:
    """A succeeded job's progress: its last epoch, every batch of it, 100%.

    Progress writes are throttled while training, so the last one may predate the last epoch.
    """
    last_epoch = (
        select(func.max(EpochMetric.epoch)).where(EpochMetric.job_id == job_id).scalar_subquery()
    )
    return {
        "progress_epoch": func.coalesce(last_epoch, Job.progress_epoch),
        "progress_batch": Job.progress_total_batches,
        "progress_percent": 100.0,
    }


def request_cancel(*, session: Session, job: Job, stale_after: float | None = None) -> Job:
    """A job no worker holds (queued, or running with a heartbeat older than `stale_after`:
    a dead worker) is cancelled at once; a live worker stops at the next batch boundary."""
    job.cancel_requested = True
    settle_abandoned_cancel(session=session, job=job, stale_after=stale_after)
    session.flush()
    return job


def settle_abandoned_cancel(*, session: Session, job: Job, stale_after: float | None) -> bool:
    """A pending cancel of a job no worker holds takes effect now (no worker ever will)."""
    age = seconds_since(job.heartbeat_at)
    stale = stale_after is not None and (age is None or age > stale_after)
    abandoned = job.status == JobStatus.queued or (job.status == JobStatus.running and stale)
    if job.cancel_requested and abandoned:
        job.status = JobStatus.cancelled
        job.finished_at = utcnow()
        job.worker = None
        session.flush()
    return job.status == JobStatus.cancelled


def retry_job(*, session: Session, job: Job) -> Job:
    """A failed or cancelled job back to `queued` with a fresh attempt budget; its checkpoint
    folder is kept, so the worker resumes from `last.pt` when it is compatible."""
    job.status = JobStatus.queued
    job.attempts = 0
    job.cancel_requested = False
    job.finished_at = None
    job.worker = None
    job.heartbeat_at = None
    job.error_message = job.error_traceback = job.last_failure = None
    job.enqueued_at = None
    session.flush()
    return job


def cancel_requested(*, session: Session, job_id: int) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def upsert_metric(*, session: Session, job_id: int, metrics: EpochMetrics) -> None:
    """Insert or replace the (job, epoch) row: a resumed epoch overwrites, never duplicates."""
    values = metrics.model_dump(exclude={"best_details"})
    row = session.scalar(
        select(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch == metrics.epoch)
    )
    if row is None:
        session.add(EpochMetric(job_id=job_id, **values))
    else:
        for key, value in values.items():
            setattr(row, key, value)
    if metrics.is_best:
        session.execute(
            update(EpochMetric)
            .where(EpochMetric.job_id == job_id, EpochMetric.epoch != metrics.epoch)
            .values(is_best=False)
            .execution_options(synchronize_session=False)
        )
        job = session.get(Job, job_id)
        if job is not None:
            job.best_epoch = metrics.epoch
            job.best_val_accuracy = metrics.val_accuracy
            job.best_val_loss = metrics.val_loss
            if metrics.best_details is not None:
                job.best_details = metrics.best_details.model_dump()
    session.flush()


def record_test_metrics(*, session: Session, job_id: int, metrics: TestMetrics) -> None:
    _set_job_columns(
        session, job_id, test_accuracy=metrics.accuracy, test_metrics=metrics.model_dump()
    )


def upsert_checkpoint(
    *,
    session: Session,
    job_id: int,
    kind: str,
    epoch: int,
    path: str,
    size_bytes: int,
    sha256: str,
) -> None:
    row = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.kind == kind)
    )
    if row is None:
        row = Checkpoint(job_id=job_id, kind=kind)
        session.add(row)
    row.epoch, row.path, row.size_bytes, row.sha256 = epoch, path, size_bytes, sha256
    row.created_at = utcnow()
    session.flush()


def job_metrics(
    *, session: Session, job_id: int, offset: int = 0, limit: int | None = None
) -> list[EpochMetric]:
    query = select(EpochMetric).where(EpochMetric.job_id == job_id).order_by(EpochMetric.epoch)
    return list(session.scalars(query.offset(offset).limit(limit)))


def count_metrics(*, session: Session, job_id: int) -> int:
    query = select(func.count(EpochMetric.id)).where(EpochMetric.job_id == job_id)
    return session.scalar(query) or 0


M = TypeVar("M", bound=EpochMetrics)


def epochs_of_jobs(
    *,
    session: Session,
    job_ids: Sequence[int],
    grad_norms: bool = True,
    model: type[M] = EpochMetrics,  # type: ignore[assignment]
) -> dict[int, list[M]]:
    """Every epoch of these jobs in one query, per job in epoch order, as `model`s.

    Plain rows of the reported columns, not ORM objects: a comparison reads hundreds.
    `grad_norms=False` leaves out the one JSON column (decoding it is most of the cost).
    """
    left_out = {"best_details"} if grad_norms else {"best_details", "grad_norms"}
    fields = [name for name in EpochMetrics.model_fields if name not in left_out]
    query = (
        select(EpochMetric.job_id, *(getattr(EpochMetric, name) for name in fields))
        .where(EpochMetric.job_id.in_(job_ids))
        .order_by(EpochMetric.job_id, EpochMetric.epoch)
    )
    by_job: dict[int, list[M]] = {job_id: [] for job_id in job_ids}
    validate = model.model_validate
    # A plain dict per row: pydantic reads a RowMapping through Python-level Mapping.get.
    for job_id, *values in session.execute(query):
        by_job[job_id].append(validate(dict(zip(fields, values, strict=True))))
    return by_job


def job_fields_by_id(
    *, session: Session, job_ids: Sequence[int], columns: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """`columns` (`id` among them) of the jobs that exist among `job_ids`, in one query, as
    plain dicts: no ORM objects, and no JSON column decoded that is not asked for."""
    query = select(*(getattr(Job, name) for name in columns)).where(Job.id.in_(job_ids))
    rows = (dict(zip(columns, values, strict=True)) for values in session.execute(query))
    return {row["id"]: row for row in rows}


def job_checkpoints(*, session: Session, job_id: int) -> list[Checkpoint]:
    return list(
        session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.kind)
        )
    )


def promote_job(*, session: Session, job: Job) -> None:
    """Make `job` its dataset's serving model; the previously promoted one is un-promoted."""
    # Promotions take turns on the serving-generation row (bumping it, as the triggers also
    # do), so a concurrent one waits and then sees ours; only promoted rows are rewritten,
    # not every job of the dataset.
    session.execute(
        update(ServingGeneration)
        .where(ServingGeneration.id == 1)
        .values(generation=ServingGeneration.generation + 1)
    )
    session.execute(
        update(Job)
        .where(Job.dataset_id == job.dataset_id, Job.id != job.id, Job.promoted_at.is_not(None))
        .values(promoted_at=None)
        .execution_options(synchronize_session=False)
    )
    job.promoted_at = utcnow()
    session.flush()


def unpromote_job(*, session: Session, job: Job) -> None:
    job.promoted_at = None
    session.flush()


def delete_job(*, session: Session, job: Job) -> None:
    session.delete(job)
    session.flush()


def seconds_since(moment: datetime | None) -> float | None:
    return None if moment is None else (utcnow() - moment).total_seconds()


def record_worker_presence(*, session: Session, name: str, queues: list[str]) -> None:
    """This worker is alive and consumes `queues` (insert or refresh its row)."""
    session.merge(WorkerPresence(name=name, queues=sorted(queues), seen_at=utcnow()))
    session.flush()


def forget_worker(*, session: Session, name: str) -> None:
    session.execute(delete(WorkerPresence).where(WorkerPresence.name == name))
    session.flush()


def live_queues(*, session: Session, stale_after: float) -> set[str]:
    """Queues some worker seen within `stale_after` seconds consumes."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    rows = session.scalars(select(WorkerPresence.queues).where(WorkerPresence.seen_at >= cutoff))
    return {queue for queues in rows for queue in queues}
