"""Hyperparameter searches on the job queue, with Optuna.

A search is an Optuna study in Optuna's own RDB storage on the service's database: on
PostgreSQL the same database, in a schema of its own (`optuna`); on SQLite a file beside
foodlab's. Optuna creates and migrates its tables itself, with its own `alembic_version` table,
which would clash with foodlab's in one schema; in a schema of their own its tables never meet
foodlab's migrations or drift test, whatever later Optuna versions add.

Each trial is a job, made by the one job factory: `fill_search` asks the study for a trial and
creates its job (never more than n_trials, never more than max_parallel unfinished), the worker
reports the objective each epoch (workers/trials.py), and `finish_trial` tells the study how
the trial ended and fills the search again. A resumed job keeps its trial number, so a killed
worker never makes a new trial.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import uuid
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast

import optuna
from optuna.trial import TrialState
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from core import repository as repo
from core.db import UnitOfWork, get_engine
from core.errors import Conflict, NotFound, UserError
from core.job_factory import CanonicalOptions, JobRequest, create_jobs, validated_options
from core.queue import queue_for_device
from core.search_spec import SearchRequest, fixed_hyperparameters, normalised_space
from core.search_spec import sampled_hyperparameters as sampled
from core.specs import ArchitectureSpec
from core.tables import EpochMetric, Job, JobStatus, Search, SearchStatus, utcnow

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

OPTUNA_SCHEMA = "optuna"
Send = Callable[[int, str], None]  # (job id, queue): enqueue a trial's job
UNFINISHED = (JobStatus.queued, JobStatus.running)


# --- storage -------------------------------------------------------------------------------------


def optuna_url(database_url: str) -> str:
    """Optuna's storage URL for foodlab's database: what `optuna-dashboard` is given too."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        database = Path(url.database or "foodlab.db")
        return url.set(
            database=str(database.with_name(f"{database.stem}-optuna.db"))
        ).render_as_string(hide_password=False)
    options = f"-csearch_path={OPTUNA_SCHEMA}"
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


@lru_cache(maxsize=8)
def optuna_storage(database_url: str) -> optuna.storages.RDBStorage:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}}
    else:
        with get_engine(database_url).begin() as connection:
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
        engine_kwargs = {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(optuna_url(database_url), engine_kwargs=engine_kwargs)


def is_sqlite(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "sqlite"


def direction(objective: str) -> Literal["minimize", "maximize"]:
    return "minimize" if objective == "val_loss" else "maximize"


def _slot_seed(seed: int, slot: int) -> int:
    # Each ask builds a fresh sampler: one seeded per slot, so processes never repeat a draw.
    return int.from_bytes(hashlib.sha256(f"{seed}:{slot}".encode()).digest()[:4], "little")


def sampler_for(search: Search, slot: int = 0) -> optuna.samplers.BaseSampler:
    seed = None if search.seed is None else _slot_seed(search.seed, slot)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "grid":
        grid = {name: entry["choices"] for name, entry in search.space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    startup = min(10, max(2, search.n_trials // 2))  # foodlab's searches are short
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def pruner_for(search: Search) -> optuna.pruners.BasePruner:
    epochs = int(search.hyperparameters.get("epochs", 1))
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if search.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 1), reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def load_study(database_url: str, search: Search, slot: int = 0) -> optuna.Study:
    return optuna.load_study(
        study_name=search.study_name,
        storage=optuna_storage(database_url),
        sampler=sampler_for(search, slot),
        pruner=pruner_for(search),
    )


def objective_value(objective: str, val_accuracy: float, val_loss: float) -> float:
    return val_loss if objective == "val_loss" else val_accuracy


# --- creating, filling, finishing, cancelling ---------------------------------------------


def create_search(
    *,
    session: Session,
    database_url: str,
    request: SearchRequest,
    canonical_options: CanonicalOptions,
    queue: str | None = None,
) -> Search:
    """Validate `request`, create its Optuna study and its row (flushed; the caller commits,
    then calls `fill_search`). Raises a UserError naming the first bad field."""
    fixed = fixed_hyperparameters(request)
    space = normalised_space(request, fixed)
    options = validated_options(request.architecture, canonical_options)
    if repo.get_dataset(session=session, dataset_id=request.dataset_id) is None:
        raise NotFound(f"dataset {request.dataset_id} not found", "dataset_id")
    # SQLite takes one writer at a time: trials run one after another, as Optuna advises.
    parallel = 1 if is_sqlite(database_url) else request.max_parallel
    search = Search(
        study_name=f"foodlab-{uuid.uuid4().hex[:12]}",
        dataset_id=request.dataset_id,
        architecture=request.architecture.name,
        architecture_options=options,
        preset=request.preset,
        hyperparameters=fixed.model_dump(),
        space=space,
        n_trials=request.n_trials,
        max_parallel=parallel,
        objective=request.objective,
        pruner=request.pruner,
        sampler=request.sampler,
        seed=request.seed,
        queue=queue or queue_for_device(fixed.device),
        group_id=str(uuid.uuid4()),
    )
    optuna.create_study(
        study_name=search.study_name,
        storage=optuna_storage(database_url),
        direction=direction(request.objective),
    )
    session.add(search)
    session.flush()
    return search


def fill_search(
    *,
    unit_of_work: UnitOfWork,
    database_url: str,
    search_id: int,
    canonical_options: CanonicalOptions,
    send: Send | None,
) -> list[int]:
    """Create the trials the search may run now, each in a unit of work of the caller's that
    is committed before its job is sent (`send` None: the caller runs them, as `--local`
    does). Returns the job ids."""
    created = []
    while True:
        asked = _AskedTrial()
        try:
            with unit_of_work() as session:
                outcome = add_next_trial(
                    session=session,
                    database_url=database_url,
                    search_id=search_id,
                    canonical_options=canonical_options,
                    asked=asked,
                )
        except BaseException:
            asked.fail()  # its job was never committed: the trial must not stay running
            raise
        if outcome == "full":
            break
        if isinstance(outcome, tuple):
            job_id, queue = outcome
            created.append(job_id)
            if send is not None:
                send(job_id, queue)
    with unit_of_work() as session:
        close_if_done(session=session, search_id=search_id)
    return created


class _AskedTrial:
    """The study's trial one unit of work asked for, so that it can be told failed when that
    unit makes no job for it."""

    def __init__(self) -> None:
        self.study: optuna.Study | None = None
        self.number: int | None = None

    def ask(self, study: optuna.Study) -> optuna.Trial:
        trial = study.ask()
        self.study, self.number = study, trial.number
        return trial

    def fail(self) -> None:
        if self.study is not None and self.number is not None:
            self.study.tell(self.number, state=TrialState.FAIL, skip_if_finished=True)


def add_next_trial(
    *,
    session: Session,
    database_url: str,
    search_id: int,
    canonical_options: CanonicalOptions,
    asked: _AskedTrial,
) -> tuple[int, str] | str:
    """One trial's job, flushed (the caller commits, then sends it), or "full" (nothing to add
    now) or "retry" (another process won the slot, or the sample was refused)."""
    search = session.get(Search, search_id)
    if search is None or search.status != SearchStatus.running or search.cancel_requested:
        return "full"
    active = (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.search_id == search_id, Job.status.in_(UNFINISHED))
        )
        or 0
    )
    slot = search.trials_created
    if slot >= search.n_trials or active >= search.max_parallel:
        return "full"
    # Compare-and-set on the counter: of two processes filling at once, one takes the slot.
    claimed = repo.rows_changed(
        session,
        update(Search)
        .where(Search.id == search_id, Search.trials_created == slot)
        .values(trials_created=slot + 1)
        .execution_options(synchronize_session=False),
    )
    if claimed != 1:
        return "retry"
    trial = asked.ask(load_study(database_url, search, slot))
    try:
        hyper = sampled(search.hyperparameters, suggest(trial, search.space))
    except UserError as exc:  # a combination the schema refuses: a failed trial, no job
        log.warning("search %s trial %s: %s", search_id, trial.number, exc)
        asked.fail()
        return "retry"
    request = JobRequest(
        dataset_id=search.dataset_id,
        architecture=ArchitectureSpec(
            name=search.architecture, options=search.architecture_options
        ),
        preset=search.preset,
        hyperparameters=hyper.model_dump(),
    )
    [job] = create_jobs(
        session=session,
        request=request,
        canonical_options=canonical_options,
        queue=search.queue,
        group_id=search.group_id,
        search_id=search_id,
        trial_number=trial.number,
    )
    session.flush()
    return job.id, job.queue


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict[str, Any]:
    params = {}
    for name, entry in space.items():
        if entry["kind"] == "choice":
            params[name] = trial.suggest_categorical(name, entry["choices"])
        elif entry["kind"] == "int":
            params[name] = trial.suggest_int(
                name, entry["low"], entry["high"], log=entry["log"], step=int(entry["step"] or 1)
            )
        else:
            params[name] = trial.suggest_float(
                name, entry["low"], entry["high"], log=entry["log"], step=entry["step"]
            )
    return params


def close_if_done(*, session: Session, search_id: int) -> None:
    """Mark the search succeeded once all its trials are made and finished (flushed)."""
    active = select(Job.id).where(Job.search_id == search_id, Job.status.in_(UNFINISHED))
    session.execute(
        update(Search)
        .where(
            Search.id == search_id,
            Search.status == SearchStatus.running,
            Search.trials_created >= Search.n_trials,
            ~active.exists(),
        )
        .values(status=SearchStatus.succeeded, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.flush()


def trial_value(session: Session, job: Job, objective: str) -> float | None:
    """The trial's result: the best epoch's validation accuracy, or the lowest validation loss."""
    if objective == "val_loss":
        return session.scalar(
            select(func.min(EpochMetric.val_loss)).where(EpochMetric.job_id == job.id)
        )
    return job.best_val_accuracy


def finish_trial(
    *,
    unit_of_work: UnitOfWork,
    database_url: str,
    job_id: int,
    canonical_options: CanonicalOptions,
    send: Send | None,
) -> None:
    """Tell the study how the trial's job ended, then let the search go on."""
    with unit_of_work() as session:
        job = repo.get_job(session=session, job_id=job_id)
        if job is None or job.search is None or job.trial_number is None:
            return
        search, number = job.search, job.trial_number
        value = trial_value(session, job, search.objective)
        status = job.status
    tell(load_study(database_url, search), number, status, value)
    fill_search(
        unit_of_work=unit_of_work,
        database_url=database_url,
        search_id=search.id,
        canonical_options=canonical_options,
        send=send,
    )


def tell(study: optuna.Study, number: int, status: JobStatus, value: float | None) -> None:
    if status == JobStatus.succeeded and value is not None and math.isfinite(value):
        study.tell(number, value, skip_if_finished=True)
    elif status == JobStatus.pruned:
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
    else:  # failed, cancelled, or a value Optuna cannot rank (a diverged run's NaN loss)
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def cancel_search(*, session: Session, search: Search) -> list[int]:
    """Stop the search: no new trials; queued trials cancelled now, running ones at their next
    batch (their worker then tells the study). Flushed; returns the trial numbers cancelled
    now, for `tell_cancelled` once the caller has committed."""
    if search.status != SearchStatus.running:
        raise Conflict(f"search {search.id} is already {search.status.value}", "search_id")
    search.cancel_requested = True
    search.status = SearchStatus.cancelled
    search.finished_at = utcnow()
    stopped = []
    for job in search.trials:
        if not job.status.finished:
            repo.request_cancel(session=session, job=job)
            if job.status == JobStatus.cancelled and job.trial_number is not None:
                stopped.append(job.trial_number)
    session.flush()
    return stopped


def tell_cancelled(database_url: str, search: Search, numbers: list[int]) -> None:
    study = load_study(database_url, search)
    for number in numbers:
        tell(study, number, JobStatus.cancelled, None)


# --- reading -------------------------------------------------------------------------------------


def search_summary(*, session: Session, database_url: str, search: Search) -> dict[str, Any]:
    """Every trial (number, job, parameters, state, objective, epochs run), the best trial and
    the parameter importances."""
    study = load_study(database_url, search)
    jobs = {job.trial_number: job for job in search.trials}
    epochs = dict(
        session.execute(
            select(EpochMetric.job_id, func.count())
            .join(Job, Job.id == EpochMetric.job_id)
            .where(Job.search_id == search.id)
            .group_by(EpochMetric.job_id)
        ).all()
    )
    trials = []
    for trial in study.get_trials(deepcopy=False):
        job = jobs.get(trial.number)
        trials.append(
            {
                "number": trial.number,
                "job_id": job.id if job else None,
                "job_status": job.status.value if job else None,
                "params": trial.params,
                "state": trial.state.name.lower(),
                "value": trial.value,
                "epochs_run": epochs.get(job.id, 0) if job else 0,
                "test_accuracy": job.test_accuracy if job else None,
            }
        )
    complete = [t for t in trials if t["state"] == "complete"]
    best = None
    if complete:
        pick = min if search.objective == "val_loss" else max
        best = pick(complete, key=lambda t: cast(float, t["value"]))  # complete: a number
    return {"trials": trials, "best_trial": best, "importances": importances(study)}


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances; empty until two complete trials differ in some parameter."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params != complete[0].params for t in complete):
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):  # e.g. a parameter with a single value
            return {}
    return {name: float(value) for name, value in found.items()}


PLOTS = {
    "history": "plot_optimization_history",
    "parallel": "plot_parallel_coordinate",
    "importances": "plot_param_importances",
}
_PLOT_LOCK = threading.Lock()  # pyplot's figure registry is not thread-safe


def search_plot(database_url: str, search: Search, kind: str) -> bytes:
    """A PNG drawn by optuna.visualization.matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    study = load_study(database_url, search)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise Conflict(f"search {search.id} has no complete trial to plot yet", "search_id")
    if kind == "importances" and not importances(study):
        raise Conflict(
            f"search {search.id} needs two complete trials that differ before "
            "importances can be drawn",
            "search_id",
        )
    # rc_context: Optuna's plots switch pyplot's global style, which would change the colours
    # of every later figure in this process (the report's, the API's curves).
    with _PLOT_LOCK, warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        axes = getattr(optuna_plots, PLOTS[kind])(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
    return buffer.getvalue()
