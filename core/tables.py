"""Database tables (SQLAlchemy 2 typed ORM). The schema changes only through Alembic migrations."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.specs import JobRunInfo

# Named constraints so that migrations can refer to (and drop) them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (portable across SQLite and PostgreSQL), returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    pruned = "pruned"  # a search trial its pruner stopped; epochs and checkpoints are kept

    @property
    def finished(self) -> bool:
        return self is not JobStatus.queued and self is not JobStatus.running


class SearchStatus(enum.StrEnum):
    running = "running"
    succeeded = "succeeded"  # every trial finished
    cancelled = "cancelled"


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text, doc="folder in ImageFolder layout")
    source: Mapped[str] = mapped_column(String(20), doc="upload or folder")
    fingerprint: Mapped[str] = mapped_column(String(64))
    classes: Mapped[list[Any]] = mapped_column(default=list)
    counts: Mapped[dict[str, Any]] = mapped_column(
        default=dict, doc="{class: {total, train, val}} for the default split"
    )
    skipped: Mapped[list[Any]] = mapped_column(default=list, doc="[{file, reason}]")
    num_images: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="dataset")


class Job(Base):
    __tablename__ = "jobs"
    # One job per trial: a retried or resumed trial stays the same job.
    __table_args__ = (UniqueConstraint("search_id", "trial_number", name="uq_jobs_search_trial"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=20), default=JobStatus.queued
    )
    architecture: Mapped[str] = mapped_column(String(100))
    architecture_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    preset: Mapped[str | None] = mapped_column(String(50))
    queue: Mapped[str] = mapped_column(String(50), default="cpu")
    group_id: Mapped[str | None] = mapped_column(String(36), doc="repeats share it")
    repeat_index: Mapped[int] = mapped_column(default=0)
    search_id: Mapped[int | None] = mapped_column(
        ForeignKey("searches.id", ondelete="CASCADE"), index=True, doc="a search's trial"
    )
    trial_number: Mapped[int | None] = mapped_column(doc="the Optuna trial this job runs")

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200), doc="hostname:pid running it")
    attempts: Mapped[int] = mapped_column(default=0, doc="times a worker started it")
    lease: Mapped[int] = mapped_column(
        default=0, server_default="0", doc="fencing token: grows with every claim, never reset"
    )
    enqueued_at: Mapped[datetime | None] = mapped_column(doc="when a message last named it")
    last_failure: Mapped[str | None] = mapped_column(Text, doc="why the last attempt was lost")
    cancel_requested: Mapped[bool] = mapped_column(default=False)

    progress_epoch: Mapped[int] = mapped_column(default=0)
    progress_batch: Mapped[int] = mapped_column(default=0)
    progress_total_batches: Mapped[int] = mapped_column(default=0)
    progress_percent: Mapped[float] = mapped_column(default=0.0)
    eta_seconds: Mapped[float | None]

    num_parameters: Mapped[int | None]
    gflops: Mapped[float | None]
    device: Mapped[str | None] = mapped_column(String(50))
    run_info: Mapped[dict[str, Any]] = mapped_column(
        default=dict, doc="split sizes, skipped files, class names: see `run_details`"
    )
    best_epoch: Mapped[int | None]
    best_val_accuracy: Mapped[float | None]
    best_val_loss: Mapped[float | None]
    best_details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    test_accuracy: Mapped[float | None] = mapped_column(doc="best checkpoint on the test part")
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="loss, accuracy, per-class accuracy, confusion matrix, macro F1 on test"
    )
    promoted_at: Mapped[datetime | None] = mapped_column(doc="explicitly chosen to serve")

    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)

    dataset: Mapped[Dataset] = relationship(back_populates="jobs")
    search: Mapped[Search | None] = relationship(back_populates="trials")
    metrics: Mapped[list[EpochMetric]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="EpochMetric.epoch"
    )
    checkpoints: Mapped[list[Checkpoint]] = relationship(
        back_populates="job", cascade="all, delete-orphan"
    )

    @property
    def run_details(self) -> JobRunInfo:
        """`run_info` read through its schema."""
        return JobRunInfo.model_validate(self.run_info or {})


class Search(Base):
    """A hyperparameter search: an Optuna study whose trials are jobs (see core/search.py)."""

    __tablename__ = "searches"
    __table_args__ = (UniqueConstraint("study_name", name="uq_searches_study_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_name: Mapped[str] = mapped_column(String(100), doc="the Optuna study's name")
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    status: Mapped[SearchStatus] = mapped_column(
        Enum(SearchStatus, native_enum=False, length=20), default=SearchStatus.running
    )
    architecture: Mapped[str] = mapped_column(String(100))
    architecture_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    preset: Mapped[str] = mapped_column(String(50))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(
        default=dict, doc="every hyperparameter not searched, resolved from preset and fixed"
    )
    space: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_trials: Mapped[int]
    max_parallel: Mapped[int]
    objective: Mapped[str] = mapped_column(String(20))
    pruner: Mapped[str] = mapped_column(String(30))
    sampler: Mapped[str] = mapped_column(String(20))
    seed: Mapped[int | None]
    queue: Mapped[str] = mapped_column(String(50), default="cpu")
    group_id: Mapped[str] = mapped_column(String(36), doc="every trial's job group")
    trials_created: Mapped[int] = mapped_column(default=0, doc="compare-and-set counter")
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    trials: Mapped[list[Job]] = relationship(back_populates="search", order_by="Job.trial_number")


# The model-selection order: best validation accuracy, lower loss, newer, higher id. A job
# with a best accuracy always has a best loss (both come from one epoch row), so the plain
# ascending loss sorts the same on SQLite (nulls first) and PostgreSQL (nulls last).
JOB_RANKING = (
    Job.best_val_accuracy.desc().nulls_last(),
    Job.best_val_loss.asc(),
    Job.finished_at.desc().nulls_last(),
    Job.id.desc(),
)

# Read paths and the indexes that serve them (migration 0006_read_indexes): every list, count
# and model-selection query walks an index in the order it returns, never the whole table.
# SQLite cannot write NULLS LAST in an index, but its DESC already puts nulls last; the
# migration writes each index in the form its database needs (see there).
Index("ix_jobs_status_id", Job.status, Job.id)
Index("ix_jobs_dataset_id_id", Job.dataset_id, Job.id)
Index("ix_jobs_dataset_status", Job.dataset_id, Job.status, Job.id)
Index("ix_jobs_architecture_id", Job.architecture, Job.id)
Index("ix_jobs_architecture_status", Job.architecture, Job.status, Job.id)
Index("ix_jobs_group_id_id", Job.group_id, Job.id)
Index("ix_jobs_ranking", Job.status, Job.dataset_id, *JOB_RANKING)
Index("ix_jobs_recent", Job.status, Job.finished_at.desc().nulls_last(), Job.id.desc())
Index("ix_jobs_promoted", Job.dataset_id, Job.promoted_at, Job.id)


class ServingGeneration(Base):
    """One row whose number changes whenever the choice of a serving model may have changed.

    Triggers (migration 0006_read_indexes) bump it when a job finishes, is promoted or
    un-promoted, changes its best metrics, moves dataset or is deleted, and when a bundle row
    changes, whoever writes (API, worker, a hand-run SQL fix); readers cache the choice per
    generation and check this single row instead of sorting jobs on every request.
    """

    __tablename__ = "serving_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(default=0)


class EpochMetric(Base):
    """One row per (job, epoch): a retried or resumed job can never duplicate an epoch."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epoch_metrics_job_epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    train_loss: Mapped[float]
    train_accuracy: Mapped[float]
    val_loss: Mapped[float]
    val_accuracy: Mapped[float]
    lr: Mapped[float]
    epoch_seconds: Mapped[float]
    epoch_cpu_seconds: Mapped[float | None] = mapped_column(doc="process CPU time of the epoch")
    load_average: Mapped[float | None] = mapped_column(doc="1-minute load average at its end")
    train_images_per_second: Mapped[float]
    generalization_gap: Mapped[float]
    grad_norms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    skipped_steps: Mapped[int] = mapped_column(default=0, server_default="0")
    is_best: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="metrics")


class Checkpoint(Base):
    """A file on disk that belongs to a job: last.pt, best.pt or the inference bundle."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_checkpoints_job_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20), doc="last, best or bundle")
    epoch: Mapped[int]
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="checkpoints")


class WorkerPresence(Base):
    """A worker process and the queues it consumes, refreshed while it lives: the API tells a
    queued job that no live worker takes its queue (a CUDA job and no GPU worker)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True, doc="hostname:pid")
    queues: Mapped[list[Any]] = mapped_column(default=list)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
