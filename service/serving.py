"""Which model answers /predict, and the loaded models that answer it.

- Selection: data-access functions (session as keyword) that pick the serving job of a
  dataset: the promoted one, else the best succeeded one.
- `ModelCache`: a bounded LRU of loaded inference bundles, keyed by the bundle file's identity
  so a rewritten bundle is reloaded, never served stale.
- `InferenceBatcher`: one thread runs every forward pass; requests that arrive while it is busy
  share the next pass, so concurrent clients get batching without any added wait when idle.

A request resolves its `LoadedModel` once and keeps that object to the end: promoting another
job or evicting the cache entry never changes the model under a request in flight.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
from fastapi import Depends, Request
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

import models
from core.errors import Conflict, InvalidInput, NotFound
from core.tables import Checkpoint, Dataset, Job, JobStatus
from service.deps import SettingsDep

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


# ---------------------------------------------------------------- selection (data access)


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


# ---------------------------------------------------------------- resolution (raises UserError)


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
    elif session.get(Dataset, dataset_id) is None:
        raise NotFound(f"dataset {dataset_id} not found", "dataset_id")
    choice = serving_choice(session=session, dataset_id=dataset_id) if dataset_id else None
    if choice is None:
        scope = f" for dataset {dataset_id}" if dataset_id is not None else ""
        raise Conflict(
            f"no servable model{scope}: train one (POST /jobs) and wait until it succeeds, "
            "or promote a succeeded job (POST /models/{job_id}/promote)",
            "dataset_id" if dataset_id is not None else None,
        )
    return choice


def require_job(*, session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found", "job_id")
    return job


def require_servable(*, session: Session, job_id: int) -> ServableModel:
    """The job's model, or 404 (unknown job) / 409 (not succeeded, or no bundle)."""
    job = require_job(session=session, job_id=job_id)
    if job.status != JobStatus.succeeded:
        raise Conflict(
            f"job {job_id} is {job.status.value}; only succeeded jobs can serve", "job_id"
        )
    model = servable_model(session=session, job_id=job_id)
    if model is None:
        raise Conflict(f"job {job_id} has no inference bundle; retrain it", "job_id")
    return model


# ---------------------------------------------------------------- loaded models


@dataclass(frozen=True)
class BundleKey:
    """A bundle file's identity: a rewrite (new inode, mtime or size) makes a new key."""

    path: str
    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: Path) -> BundleKey:
        stat = path.stat()
        return cls(str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    key: BundleKey
    bundle: models.Bundle


class ModelCache:
    """Bounded LRU of loaded bundles. Blocking: call it from a worker thread."""

    def __init__(self, capacity: int, dtype: torch.dtype = torch.float32) -> None:
        self.capacity = capacity
        self.dtype = dtype
        self._entries: OrderedDict[BundleKey, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[BundleKey, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model: ServableModel) -> LoadedModel:
        """The loaded bundle of `model`; 409 naming the job if it cannot be loaded."""
        try:
            key = BundleKey.of(Path(model.bundle.path))
            return self._cached(key) or self._load_once(key)
        except (models.BundleError, OSError) as exc:
            raise Conflict(
                f"the model of job {model.job.id} cannot be loaded ({exc}); retrain it or "
                "promote another job",
                "job_id",
            ) from None

    def _cached(self, key: BundleKey) -> LoadedModel | None:
        with self._lock:
            loaded = self._entries.get(key)
            if loaded is not None:
                self._entries.move_to_end(key)
            return loaded

    def _load_once(self, key: BundleKey) -> LoadedModel:
        # One loader per key: concurrent requests for a cold bundle wait for one load,
        # while requests for other (cached) bundles are not held up.
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        try:
            with key_lock:
                loaded = self._cached(key)
                if loaded is None:
                    loaded = LoadedModel(key, load_for_inference(key.path, self.dtype))
                    self._insert(loaded)
                return loaded
        finally:
            with self._lock:
                self._loading.pop(key, None)

    def _insert(self, loaded: LoadedModel) -> None:
        with self._lock:
            # A rewritten file replaces its previous version instead of waiting for eviction.
            for stale in [k for k in self._entries if k.path == loaded.key.path]:
                del self._entries[stale]
            self._entries[loaded.key] = loaded
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


def load_for_inference(path: str, dtype: torch.dtype) -> models.Bundle:
    """The bundle, its model on the CPU in `dtype` and channels-last layout."""
    bundle = models.load_bundle(path, map_location="cpu")
    bundle.model = models.prepare_for_inference(bundle.model, dtype)
    return bundle


# ---------------------------------------------------------------- batched inference

TopK = list[list[tuple[str, float]]]


@dataclass(eq=False)
class _Work:
    model: LoadedModel
    pixels: torch.Tensor
    top_k: int
    result: Future[TopK] = field(default_factory=Future)


class InferenceBatcher:
    """Runs forward passes on `runners` threads; work queued meanwhile for one model is batched.

    There is no gathering window: an idle runner starts at once (no added latency for a lone
    request), and a busy batcher collects whatever arrived during the passes in progress.
    Two runners by default: a second pass at the same time fills the gaps one pass leaves in
    the cores' use (its serial parts, the joins between parallel ops); docs/serving.md has the
    figures.
    """

    def __init__(self, max_batch_images: int = 64, runners: int = 2) -> None:
        self.max_batch_images = max_batch_images
        self.runners = runners
        self._pending: deque[_Work] = deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []

    def submit(self, model: LoadedModel, pixels: torch.Tensor, top_k: int) -> Future[TopK]:
        work = _Work(model, pixels, top_k)
        with self._ready:
            if not self._threads:
                self._start_runners()
            self._pending.append(work)
            self._ready.notify()
        return work.result

    def _start_runners(self) -> None:
        for index in range(self.runners):
            thread = threading.Thread(
                target=self._run, name=f"foodlab-inference-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                results = run_forward(batch)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for work in batch:
                    work.result.set_exception(exc)
                continue
            for work, result in zip(batch, results, strict=True):
                work.result.set_result(result)

    def _next_batch(self) -> list[_Work]:
        with self._ready:
            while not self._pending:
                self._ready.wait()
            batch = [self._pending.popleft()]
            images = len(batch[0].pixels)
            while (
                self._pending
                and self._pending[0].model is batch[0].model
                and images + len(self._pending[0].pixels) <= self.max_batch_images
            ):
                work = self._pending.popleft()
                batch.append(work)
                images += len(work.pixels)
            return batch


def run_forward(batch: list[_Work]) -> list[TopK]:
    """One forward pass over every request's images; each request gets its own top-k."""
    bundle = batch[0].model.bundle
    pixels = torch.cat([work.pixels for work in batch])
    per_request = models.probabilities(bundle.model, pixels).split(
        [len(work.pixels) for work in batch]
    )
    return [
        _top_k(probs, work.top_k, bundle.class_names)
        for work, probs in zip(batch, per_request, strict=True)
    ]


def _top_k(probabilities: torch.Tensor, k: int, class_names: list[str]) -> TopK:
    values, indices = probabilities.topk(min(k, len(class_names)), dim=1)
    return [
        [(class_names[i], p) for i, p in zip(row_i, row_p, strict=True)]
        for row_i, row_p in zip(indices.tolist(), values.tolist(), strict=True)
    ]


class ModelServer:
    """What the API keeps between requests: the loaded-model cache and the batcher."""

    def __init__(
        self, cache_size: int, precision: models.Precision = "float32", runners: int = 2
    ) -> None:
        self.dtype = models.inference_dtype(precision)
        self.cache = ModelCache(cache_size, self.dtype)
        self.batcher = InferenceBatcher(runners=runners)


async def get_model_server(request: Request, settings: SettingsDep) -> ModelServer:
    """One ModelServer per app, created on first use (on the event loop: no race, no thread)."""
    state = request.app.state
    if getattr(state, "model_server", None) is None:
        state.model_server = ModelServer(
            settings.model_cache_size, settings.predict_precision, settings.predict_runners
        )
    return state.model_server


ModelServerDep = Annotated[ModelServer, Depends(get_model_server)]
