"""Request and response bodies: one schema per direction; table rows are never returned as-is."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.dataset_registry import SKIPPED_KEPT
from core.job_factory import JobRequest
from core.specs import ArchitectureSpec, EpochMetrics
from core.tables import Checkpoint, Dataset, Job, JobStatus, Search, SearchStatus


class DatasetRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00]*$",
        description="folder under FOODLAB_DATASETS_ROOT, ImageFolder layout",
    )
    name: str | None = Field(None, max_length=200)

    @field_validator("path")
    @classmethod
    def _names_fit_the_filesystem(cls, path: str) -> str:
        if any(len(part.encode()) > 255 for part in path.split("/")):
            raise ValueError("a folder name is longer than 255 bytes")
        return path


class DatasetPublic(BaseModel):
    id: int
    name: str
    source: str
    classes: list[str]
    num_images: int
    counts: dict[str, Any] = Field(description="per class: total, train, val (default split)")
    skipped: list[dict[str, Any]] = Field(
        description="the first files that could not be decoded ({file, reason})"
    )
    skipped_count: int = Field(description="how many files could not be decoded in all")
    fingerprint: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Dataset) -> DatasetPublic:
        # Class totals count every image file found; num_images only the decodable ones.
        found = sum(int(count.get("total", 0)) for count in row.counts.values())
        return cls(
            id=row.id,
            name=row.name,
            source=row.source,
            classes=row.classes,
            num_images=row.num_images,
            counts=row.counts,
            skipped=row.skipped[:SKIPPED_KEPT],
            skipped_count=max(found - row.num_images, len(row.skipped)),
            fingerprint=row.fingerprint,
            created_at=row.created_at,
        )


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class JobCreate(JobRequest):
    """The body of POST /jobs: a job request as `core.job_factory` takes it."""


class Progress(BaseModel):
    epoch: int
    total_epochs: int
    batch: int
    total_batches: int
    percent: float
    eta_seconds: float | None


class BestEpoch(BaseModel):
    epoch: int | None
    val_accuracy: float | None
    val_loss: float | None
    details: dict[str, Any] | None


class JobError(BaseModel):
    message: str
    traceback: str | None


class JobPublic(BaseModel):
    id: int
    dataset_id: int
    status: JobStatus
    architecture: ArchitectureSpec
    preset: str | None
    hyperparameters: dict[str, Any]
    queue: str
    group_id: str | None
    repeat_index: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker: str | None
    attempts: int
    cancel_requested: bool
    device: str | None
    num_parameters: int | None
    gflops: float | None
    progress: Progress
    best: BestEpoch
    test: dict[str, Any] | None = Field(
        description="the best checkpoint on the held-out test images (jobs with a test part)"
    )
    promoted: bool
    error: JobError | None
    waiting: str | None = Field(
        None, description="why a queued job does not start: no live worker consumes its queue"
    )

    @classmethod
    def from_row(cls, job: Job, live_queues: set[str] | None = None) -> JobPublic:
        """`live_queues`: the queues live workers consume, to say when none takes this job's."""
        return cls(
            id=job.id,
            dataset_id=job.dataset_id,
            status=job.status,
            architecture=ArchitectureSpec(name=job.architecture, options=job.architecture_options),
            preset=job.preset,
            hyperparameters=job.hyperparameters,
            queue=job.queue,
            group_id=job.group_id,
            repeat_index=job.repeat_index,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            worker=job.worker,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            device=job.device,
            num_parameters=job.num_parameters,
            gflops=job.gflops,
            progress=Progress(
                epoch=job.progress_epoch,
                total_epochs=int(job.hyperparameters.get("epochs", 0)),
                batch=job.progress_batch,
                total_batches=job.progress_total_batches,
                percent=job.progress_percent,
                eta_seconds=job.eta_seconds,
            ),
            best=BestEpoch(
                epoch=job.best_epoch,
                val_accuracy=job.best_val_accuracy,
                val_loss=job.best_val_loss,
                details=job.best_details,
            ),
            test=job.test_metrics,
            promoted=job.promoted_at is not None,
            error=JobError(message=job.error_message, traceback=job.error_traceback)
            if job.error_message
            else None,
            waiting=_waiting(job, live_queues),
        )


def _waiting(job: Job, live_queues: set[str] | None) -> str | None:
    # "local" jobs are run by the `foodlab study --local` process itself, not by a worker.
    if live_queues is None or job.status != JobStatus.queued or job.queue == "local":
        return None
    if job.queue in live_queues:
        return None
    advice = " (a worker with a GPU)" if job.queue == "gpu" else ""
    return (
        f"no live worker consumes the '{job.queue}' queue: start one{advice}, or submit "
        "the job with device 'cpu' or 'auto'"
    )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class EpochMetricPublic(EpochMetrics):
    """A stored epoch row; the best epoch's details live on the job (`best.details`)."""

    model_config = ConfigDict(from_attributes=True)

    best_details: None = Field(None, exclude=True)


class MetricsPublic(BaseModel):
    job_id: int
    data: list[EpochMetricPublic]
    count: int


class CheckpointPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    epoch: int
    path: str = Field(description="relative to FOODLAB_HOME: server folders are not shown")
    size_bytes: int
    sha256: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Checkpoint, home: Path) -> CheckpointPublic:
        public = cls.model_validate(row)
        stored = Path(row.path)
        public.path = str(stored.relative_to(home)) if stored.is_relative_to(home) else stored.name
        return public


class ArchitecturePublic(BaseModel):
    name: str
    description: str
    default_options: dict[str, Any]
    options: dict[str, Any] = Field(description="JSON schema of the accepted options")
    parameters: int
    gflops: float = Field(description="at 224x224, 5 classes")
    timm_equivalent: str | None = None


class ArchitecturesPublic(BaseModel):
    data: list[ArchitecturePublic]
    count: int


class TrialPublic(BaseModel):
    number: int
    job_id: int | None = Field(description="None for a sampled combination the schema refused")
    job_status: JobStatus | None
    params: dict[str, Any]
    state: str = Field(description="Optuna's: running, complete, pruned, fail")
    value: float | None = Field(description="the objective (pruned: the last reported value)")
    epochs_run: int
    test_accuracy: float | None


class SearchPublic(BaseModel):
    id: int
    study_name: str = Field(description="the Optuna study (optuna-dashboard shows it too)")
    dataset_id: int
    status: SearchStatus
    architecture: ArchitectureSpec
    preset: str
    hyperparameters: dict[str, Any] = Field(description="everything not searched")
    space: dict[str, Any]
    n_trials: int
    max_parallel: int
    objective: str
    direction: str
    pruner: str
    sampler: str
    seed: int | None
    group_id: str
    trials_created: int
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, search: Search) -> SearchPublic:
        fields = {
            name: getattr(search, name)
            for name in cls.model_fields
            if name not in ("architecture", "direction")
        }
        return cls(
            **fields,
            direction="minimize" if search.objective == "val_loss" else "maximize",
            architecture=ArchitectureSpec(
                name=search.architecture, options=search.architecture_options
            ),
        )


class SearchDetail(SearchPublic):
    trials: list[TrialPublic]
    best_trial: TrialPublic | None
    importances: dict[str, float] = Field(description="fANOVA, once two complete trials differ")


class SearchesPublic(BaseModel):
    data: list[SearchPublic]
    count: int
