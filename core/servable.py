"""Which trained job answers /predict: servable jobs (succeeded, with an inference bundle) and
the one that serves each dataset, the promoted one, else the best.

Data access like `core.repository` (session as keyword); torch-free, so the API's listings
and the serving choice need no model loaded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core import repository as repo
from core.errors import Conflict, InvalidInput
from core.tables import Checkpoint, Job, JobStatus

BUNDLE_KIND = "bundle"

# Best validation accuracy first; ties: lower validation loss, then the newer job.
RANKING = (
    Job.best_val_accuracy.desc().nulls_last(),
    Job.best_val_loss.asc().nulls_last(),
    Job.finished_at.desc().nulls_last(),
    Job.id.desc(),
)


class SelectedBy(enum.StrEnum):
    promoted = "promoted"
    best = "best"
    job_id = "job_id"


@dataclass(frozen=True)
class ServableModel:
    """A succeeded job and its inference bundle row."""

    job: Job
    bundle: Checkpoint

    @property
    def epoch(self) -> int:
        return self.job.best_epoch if self.job.best_epoch is not None else self.bundle.epoch


@dataclass(frozen=True)
class Choice:
    model: ServableModel
    selected_by: SelectedBy
    serving: bool = True  # False when a request asked for a job that does not serve


def _servable() -> Select[tuple[Job, Checkpoint]]:
    return (
        select(Job, Checkpoint)
        .join(Checkpoint, (Checkpoint.job_id == Job.id) & (Checkpoint.kind == BUNDLE_KIND))
        .where(Job.status == JobStatus.succeeded)
    )


def servable_models(*, session: Session, dataset_id: int | None = None) -> list[ServableModel]:
    """Succeeded jobs with a bundle, per dataset, best first."""
    query = _servable()
    if dataset_id is not None:
        query = query.where(Job.dataset_id == dataset_id)
    rows = session.execute(query.order_by(Job.dataset_id, *RANKING))
    return [ServableModel(job, bundle) for job, bundle in rows]


def servable_model(*, session: Session, job_id: int) -> ServableModel | None:
    row = session.execute(_servable().where(Job.id == job_id)).first()
    return ServableModel(*row) if row is not None else None


def default_dataset_id(*, session: Session) -> int | None:
    """The dataset of the most recently finished servable job."""
    query = _servable().order_by(Job.finished_at.desc().nulls_last(), Job.id.desc()).limit(1)
    row = session.execute(query).first()
    return row[0].dataset_id if row is not None else None


def serving_choice(*, session: Session, dataset_id: int) -> Choice | None:
    """The promoted model of the dataset, else the best one; None when nothing is servable."""
    # One query, as every /predict runs it: promoted rows first (more than one can only come
    # from a race; the latest promotion wins), then the ranking.
    row = session.execute(
        _servable()
        .where(Job.dataset_id == dataset_id)
        .order_by(Job.promoted_at.desc().nulls_last(), *RANKING)
        .limit(1)
    ).first()
    if row is None:
        return None
    model = ServableModel(*row)
    promoted = model.job.promoted_at is not None
    return Choice(model, SelectedBy.promoted if promoted else SelectedBy.best)


def serving_job_ids(*, session: Session) -> set[int]:
    """The job that serves each dataset (for marking `serving` in listings)."""
    dataset_ids = session.scalars(_servable().with_only_columns(Job.dataset_id).distinct())
    choices = (serving_choice(session=session, dataset_id=d) for d in list(dataset_ids))
    return {choice.model.job.id for choice in choices if choice is not None}


# What a request asks for, or the user error saying why it cannot be served.


def resolve_choice(
    *, session: Session, job_id: int | None = None, dataset_id: int | None = None
) -> Choice:
    """The model a request asks for: a given job, else the dataset's serving model."""
    if job_id is not None:
        model = require_servable(session=session, job_id=job_id)
        if dataset_id is not None and model.job.dataset_id != dataset_id:
            raise InvalidInput(
                f"job {job_id} was trained on dataset {model.job.dataset_id}, not {dataset_id}",
                "dataset_id",
            )
        current = serving_choice(session=session, dataset_id=model.job.dataset_id)
        is_serving = current is not None and current.model.job.id == job_id
        return Choice(model, SelectedBy.job_id, serving=is_serving)
    if dataset_id is None:
        dataset_id = default_dataset_id(session=session)
    else:
        repo.require_dataset(session=session, dataset_id=dataset_id)
    choice = serving_choice(session=session, dataset_id=dataset_id) if dataset_id else None
    if choice is None:
        scope = f" for dataset {dataset_id}" if dataset_id is not None else ""
        raise Conflict(
            f"no servable model{scope}: train one (POST /jobs) and wait until it succeeds, "
            "or promote a succeeded job (POST /models/{job_id}/promote)",
            "dataset_id" if dataset_id is not None else None,
        )
    return choice


def require_servable(*, session: Session, job_id: int) -> ServableModel:
    """The job's model, or 404 (unknown job) / 409 (not succeeded, or no bundle)."""
    job = repo.require_job(session=session, job_id=job_id)
    if job.status != JobStatus.succeeded:
        raise Conflict(
            f"job {job_id} is {job.status.value}; only succeeded jobs can serve", "job_id"
        )
    model = servable_model(session=session, job_id=job_id)
    if model is None:
        raise Conflict(f"job {job_id} has no inference bundle; retrain it", "job_id")
    return model
