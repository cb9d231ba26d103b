"""Which trained job answers /predict: servable jobs (succeeded, with an inference bundle) and
the one that serves each dataset, the promoted one, else the best.

Data access like `core.repository` (session as keyword); torch-free, so the API's listings
and the serving choice need no model loaded.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core import repository as repo
from core.errors import Conflict, InvalidInput
from core.tables import JOB_RANKING, Checkpoint, Job, JobStatus, ServingGeneration

BUNDLE_KIND = "bundle"

# Best validation accuracy first; ties: lower validation loss, then the newer job. The
# ranking index (migration 0006_read_indexes) has this order, so the best is its first entry.
RANKING = JOB_RANKING


class SelectedBy(enum.StrEnum):
    promoted = "promoted"
    best = "best"
    job_id = "job_id"


@dataclass(frozen=True)
class ServableJob:
    """The columns of a servable job that listings and /predict use (plain values: safe to
    keep between requests, unlike rows bound to a session)."""

    id: int
    dataset_id: int
    architecture: str
    architecture_options: dict[str, Any]
    best_epoch: int | None
    best_val_accuracy: float | None
    best_val_loss: float | None
    finished_at: datetime | None
    promoted_at: datetime | None


@dataclass(frozen=True)
class BundleFile:
    path: str
    epoch: int
    size_bytes: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class ServableModel:
    """A succeeded job and its inference bundle."""

    job: ServableJob
    bundle: BundleFile

    @property
    def epoch(self) -> int:
        return self.job.best_epoch if self.job.best_epoch is not None else self.bundle.epoch


@dataclass(frozen=True)
class Choice:
    model: ServableModel
    selected_by: SelectedBy
    serving: bool = True  # False when a request asked for a job that does not serve


JOB_COLUMNS = [getattr(Job, f.name) for f in fields(ServableJob)]
BUNDLE_COLUMNS = [getattr(Checkpoint, f.name) for f in fields(BundleFile)]


def _servable(*columns: Any) -> Select[Any]:
    """Succeeded jobs joined to their bundle row (columns: default, what ServableModel holds)."""
    return (
        select(*(columns or (*JOB_COLUMNS, *BUNDLE_COLUMNS)))
        .join(Checkpoint, (Checkpoint.job_id == Job.id) & (Checkpoint.kind == BUNDLE_KIND))
        .where(Job.status == JobStatus.succeeded)
    )


def _model(row: Any) -> ServableModel:
    values = tuple(row)
    split = len(JOB_COLUMNS)
    return ServableModel(ServableJob(*values[:split]), BundleFile(*values[split:]))


def _first(session: Session, query: Select[Any]) -> ServableModel | None:
    row = session.execute(query.limit(1)).first()
    return _model(row) if row is not None else None


def servable_models(
    *, session: Session, dataset_id: int | None = None, offset: int = 0, limit: int = 50
) -> list[ServableModel]:
    """A page of succeeded jobs with a bundle, per dataset, best first."""
    query = _servable()
    if dataset_id is not None:
        query = query.where(Job.dataset_id == dataset_id)
    rows = session.execute(query.order_by(Job.dataset_id, *RANKING).offset(offset).limit(limit))
    return [_model(row) for row in rows]


def count_servable(*, session: Session, dataset_id: int | None = None) -> int:
    query = _servable(func.count(Job.id))
    if dataset_id is not None:
        query = query.where(Job.dataset_id == dataset_id)
    return session.scalar(query) or 0


def servable_model(*, session: Session, job_id: int) -> ServableModel | None:
    return _first(session, _servable().where(Job.id == job_id))


def default_dataset_id(*, session: Session) -> int | None:
    """The dataset of the most recently finished servable job."""
    query = _servable(Job.dataset_id).order_by(Job.finished_at.desc().nulls_last(), Job.id.desc())
    return session.scalar(query.limit(1))


def serving_choice(*, session: Session, dataset_id: int) -> Choice | None:
    """The promoted model of the dataset, else the best one; None when nothing is servable."""
    # Two index lookups, each reading one entry: the promoted job (more than one can only
    # come from a race; the latest promotion wins), else the first in the ranking.
    in_dataset = _servable().where(Job.dataset_id == dataset_id)
    promoted = _first(
        session,
        in_dataset.where(Job.promoted_at.is_not(None)).order_by(
            Job.promoted_at.desc(), Job.id.desc()
        ),
    )
    if promoted is not None:
        return Choice(promoted, SelectedBy.promoted)
    best = _first(session, in_dataset.order_by(*RANKING))
    return Choice(best, SelectedBy.best) if best is not None else None


def serving_generation(*, session: Session) -> int | None:
    """The number the database's triggers bump whenever a serving choice may have changed."""
    return session.scalar(select(ServingGeneration.generation).where(ServingGeneration.id == 1))


class ServingChoices:
    """Each dataset's serving choice, the default dataset and the servable counts, computed
    once per serving generation and kept in memory (one per API process).

    A request reads one row (the generation) instead of sorting jobs: writers in any process
    bump it through triggers, so a job that finishes in a worker, a promotion or a deletion is
    seen by the next request. Values are keyed by the database URL too, so one cache can
    never answer for another database.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._valid_for: tuple[str, int] | None = None
        self._values: dict[Hashable, Any] = {}

    def at(self, session: Session) -> ChoicesView:
        """What is valid now: one read of the generation, for the whole request."""
        generation = serving_generation(session=session)
        if generation is None:  # no generation row (a database not migrated): nothing to trust
            return ChoicesView(self, session, None)
        valid_for = (str(session.get_bind().engine.url), generation)
        with self._lock:
            if valid_for != self._valid_for:
                self._valid_for, self._values = valid_for, {}
        return ChoicesView(self, session, valid_for)

    def lookup(self, valid_for: tuple[str, int] | None, key: Hashable, compute: Callable[[], Any]):
        with self._lock:
            if valid_for is not None and valid_for == self._valid_for and key in self._values:
                return self._values[key]
        # Computed after the generation was read: at least as new as that generation.
        value = compute()
        with self._lock:
            if valid_for is not None and valid_for == self._valid_for:
                self._values[key] = value
        return value


@dataclass(frozen=True)
class ChoicesView:
    """The cache as one request sees it."""

    cache: ServingChoices
    session: Session
    valid_for: tuple[str, int] | None

    def choice(self, dataset_id: int) -> Choice | None:
        return self.cache.lookup(
            self.valid_for,
            ("choice", dataset_id),
            lambda: serving_choice(session=self.session, dataset_id=dataset_id),
        )

    def default_dataset_id(self) -> int | None:
        return self.cache.lookup(
            self.valid_for, "default", lambda: default_dataset_id(session=self.session)
        )

    def count(self, dataset_id: int | None) -> int:
        return self.cache.lookup(
            self.valid_for,
            ("count", dataset_id),
            lambda: count_servable(session=self.session, dataset_id=dataset_id),
        )


# What a request asks for, or the user error saying why it cannot be served.


def resolve_choice(
    *,
    session: Session,
    choices: ServingChoices,
    job_id: int | None = None,
    dataset_id: int | None = None,
) -> Choice:
    """The model a request asks for: a given job, else the dataset's serving model."""
    cached = choices.at(session)
    if job_id is not None:
        model = require_servable(session=session, job_id=job_id)
        if dataset_id is not None and model.job.dataset_id != dataset_id:
            raise InvalidInput(
                f"job {job_id} was trained on dataset {model.job.dataset_id}, not {dataset_id}",
                "dataset_id",
            )
        current = cached.choice(model.job.dataset_id)
        is_serving = current is not None and current.model.job.id == job_id
        return Choice(model, SelectedBy.job_id, serving=is_serving)
    if dataset_id is None:
        dataset_id = cached.default_dataset_id()
    choice = cached.choice(dataset_id) if dataset_id else None
    if choice is None:
        if dataset_id is not None:
            repo.require_dataset(session=session, dataset_id=dataset_id)  # 404 if unknown
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
