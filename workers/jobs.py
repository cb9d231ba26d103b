"""Running one training job for the queue: claim it, train with database callbacks, record the end.

Plain functions, tested without Celery; `workers.tasks` only wraps them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from core import repository as repo
from core.datasets import scan_dataset
from core.db import refresh_statistics, session_scope
from core.errors import UserError
from core.queue import send_training
from core.settings import Settings
from core.specs import ArchitectureSpec, EpochMetrics, Hyperparameters, JobRunInfo, TrainSpec
from core.storage import job_dir
from core.tables import JobStatus
from core.weights import FIELDS as WEIGHT_FIELDS
from core.weights import requested_weights, weights_path
from models import ModelConfigError, build_model, measure_latency_ms
from workers.engine import train
from workers.engine.callbacks import BatchProgress, CheckpointEvent, RunInfo, TrainingCallback
from workers.trials import TrialReporter, finish_trial

log = logging.getLogger(__name__)

LATENCY_RUNS = 30  # timed after warm-up; the median is kept
USER_ERRORS = (UserError, ModelConfigError)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class DatabaseCallback(TrainingCallback):
    """Writes what the engine reports into the job's rows, committed as it happens."""

    def __init__(self, settings: Settings, job_id: int, progress_interval: float = 1.0) -> None:
        self.url = settings.database
        self.job_id = job_id
        self.progress_interval = progress_interval
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self._cancel = False
        self._started = time.monotonic()
        self._done_batches = 0
        self._total_batches = 0

    def on_run_start(self, info: RunInfo) -> None:
        # A resumed run re-reports what it already did; upserts make that harmless.
        with session_scope(self.url) as session:
            for metrics in info.history:
                repo.upsert_metric(session=session, job_id=self.job_id, metrics=metrics)
            repo.record_run_start(
                session=session,
                job_id=self.job_id,
                device=info.device,
                num_parameters=info.num_parameters,
                gflops=info.gflops,
                run_info=JobRunInfo(
                    class_names=info.class_names,
                    train_size=info.train_size,
                    val_size=info.val_size,
                    test_size=info.test_size,
                    skipped=[asdict(item) for item in info.skipped],
                    start_epoch=info.start_epoch,
                ),
            )
        self._total_epochs = info.total_epochs
        self._start_epoch = info.start_epoch

    def on_batch_end(self, progress: BatchProgress) -> None:
        self._total_batches = progress.total_batches
        now = time.monotonic()
        if now - self._last_progress < self.progress_interval:
            return
        self._last_progress = now
        with session_scope(self.url) as session:
            self._record_progress(session, progress.epoch, progress.batch, progress.total_batches)

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        with session_scope(self.url) as session:
            repo.upsert_metric(session=session, job_id=self.job_id, metrics=metrics)
            # The epoch's end is exact progress, whatever the throttled batch writes last said.
            self._record_progress(session, metrics.epoch, self._total_batches, self._total_batches)

    def _record_progress(self, session: Session, epoch: int, batch: int, batches: int) -> None:
        done = (epoch - 1) * batches + batch
        total = self._total_epochs * batches
        done_here = done - (self._start_epoch - 1) * batches
        elapsed = time.monotonic() - self._started
        eta = elapsed / done_here * (total - done) if done_here > 0 else None
        repo.record_progress(
            session=session,
            job_id=self.job_id,
            epoch=epoch,
            batch=batch,
            total_batches=batches,
            percent=round(100.0 * done / max(total, 1), 2),
            eta_seconds=eta,
        )

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        with session_scope(self.url) as session:
            repo.upsert_checkpoint(
                session=session,
                job_id=self.job_id,
                kind=event.kind,
                epoch=event.epoch,
                path=str(event.path),
                size_bytes=event.size_bytes,
                sha256=event.sha256,
            )

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._last_cancel_check >= self.progress_interval:
            self._last_cancel_check = now
            with session_scope(self.url) as session:
                self._cancel = repo.cancel_requested(session=session, job_id=self.job_id)
        return self._cancel


class Heartbeat:
    """Refreshes the job's heartbeat from a thread, so a long batch never looks like death."""

    def __init__(self, settings: Settings, job_id: int, worker: str) -> None:
        self.settings, self.job_id, self.worker = settings, job_id, worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                with session_scope(self.settings.database) as session:
                    repo.heartbeat(session=session, job_id=self.job_id, worker=self.worker)
            except Exception:  # noqa: BLE001 - a missed beat is retried; never kill the job
                log.exception("heartbeat for job %s failed", self.job_id)


def run_job(settings: Settings, job_id: int, device: str | None = None) -> JobStatus | None:
    """Train job `job_id` if it is ours to run. Returns its final status, or None if ignored."""
    me = worker_name()
    with session_scope(settings.database) as session:
        if not repo.claim_job(
            session=session, job_id=job_id, worker=me, stale_after=settings.stale_after_seconds
        ):
            log.info("job %s is not claimable (finished, cancelled or alive elsewhere)", job_id)
            return None
        job = repo.get_job(session=session, job_id=job_id)
        assert job is not None  # claimed just now
        spec = job_spec(job.architecture, job.architecture_options, job.hyperparameters, device)
        data = Path(job.dataset.path)
        confine_to = _confinement(settings, job.dataset.source, data)
        trial = TrialReporter(settings, job) if job.search_id is not None else None
    with Heartbeat(settings, job_id, me):
        status, error, trace = _train(settings, job_id, spec, data, confine_to,
                                      [trial] if trial else [])
    if trial is not None and trial.pruned and status == JobStatus.cancelled:
        status = JobStatus.pruned
    with session_scope(settings.database) as session:
        repo.finish_job(session=session, job_id=job_id, status=status, error=error, traceback=trace)
    if trial is not None:
        finish_trial(settings, job_id)
    # Every finished job changes the tables' shape a little: keep SQLite's planner informed.
    refresh_statistics(settings.database)
    return status


def job_spec(name: str, options: dict, hyperparameters: dict, device: str | None) -> TrainSpec:
    hyper = Hyperparameters.model_validate(hyperparameters)
    if device and hyper.device == "auto":
        hyper = hyper.model_copy(update={"device": device})
    return TrainSpec(
        architecture=ArchitectureSpec(name=name, options=options), hyperparameters=hyper
    )


def _confinement(settings: Settings, source: str, data: Path) -> Path | None:
    """Where a dataset's files must really lie: an upload in its own folder, a registered
    server folder under the datasets root (links inside it may not lead elsewhere)."""
    if source == "upload":
        return data
    return settings.datasets_root


def with_weight_files(spec: TrainSpec, weights_root: Path | None) -> TrainSpec:
    """The spec with its pretrained-weights names replaced by the files they name under
    FOODLAB_WEIGHTS_ROOT: the worker opens nothing else, whatever the row says."""
    hyper, options = spec.hyperparameters, dict(spec.architecture.options)
    asked = requested_weights(hyper.model_dump(), options)
    if not asked:
        return spec
    paths = {field: str(weights_path(name, weights_root, field)) for field, name in asked.items()}
    if WEIGHT_FIELDS[0] in paths:
        hyper = hyper.model_copy(update={"pretrained_weights": paths[WEIGHT_FIELDS[0]]})
    if WEIGHT_FIELDS[1] in paths:
        options["pretrained_weights"] = paths[WEIGHT_FIELDS[1]]
    architecture = ArchitectureSpec(name=spec.architecture.name, options=options)
    return TrainSpec(architecture=architecture, hyperparameters=hyper)


def _train(
    settings: Settings, job_id: int, spec: TrainSpec, data: Path, confine_to: Path | None,
    extra_callbacks: list[TrainingCallback],
) -> tuple[JobStatus, str | None, str | None]:
    out_dir = job_dir(settings.checkpoints_dir, job_id)
    try:
        spec = with_weight_files(spec, settings.weights_root)
        if confine_to is not None and data.is_dir():
            scan_dataset(data, confine_to)  # refuses links leading outside; cheap (stats only)
        result = train(
            spec,
            data,
            out_dir,
            callbacks=[DatabaseCallback(settings, job_id), *extra_callbacks],
            cache_dir=settings.cache_dir,
        )
    except USER_ERRORS as exc:
        return JobStatus.failed, str(exc), None
    except Exception as exc:  # noqa: BLE001 - recorded on the job, where the user looks
        log.exception("job %s failed", job_id)
        return JobStatus.failed, f"{type(exc).__name__}: {exc}", traceback.format_exc()
    if result.status == "cancelled":
        return JobStatus.cancelled, None, None
    if result.test is not None:
        with session_scope(settings.database) as session:
            repo.record_test_metrics(session=session, job_id=job_id, metrics=result.test)
    record_inference_latency(settings, job_id, spec, len(result.class_names))
    return JobStatus.succeeded, None, None


def record_inference_latency(
    settings: Settings, job_id: int, spec: TrainSpec, num_classes: int
) -> None:
    """CPU latency of one image at the job's size, kept in run_info for comparisons.

    The weights do not change the time, so a freshly built model is timed.
    """
    options = {k: v for k, v in spec.architecture.options.items() if k != "pretrained_weights"}
    model = build_model(spec.architecture.name, num_classes, **options)
    latency_ms = measure_latency_ms(model, spec.hyperparameters.image_size, repeats=LATENCY_RUNS)
    with session_scope(settings.database) as session:
        repo.record_inference_latency(
            session=session,
            job_id=job_id,
            inference_ms=latency_ms,
            device="cpu",
            threads=torch.get_num_threads(),
            runs=LATENCY_RUNS,
            load_average=os.getloadavg()[0],
        )


def requeue_stale_jobs(settings: Settings) -> list[int]:
    """Send jobs whose worker stopped heart-beating back to the queue; they resume from `last`."""
    requeued = []
    with session_scope(settings.database) as session:
        stale = repo.stale_jobs(session=session, stale_after=settings.stale_after_seconds)
    for job_id in stale:
        # One unit of work per job, committed before its message goes out: the worker that
        # receives it must find the job queued.
        with session_scope(settings.database) as session:
            if not repo.requeue_if_stale(
                session=session, job_id=job_id, stale_after=settings.stale_after_seconds
            ):
                continue
            job = repo.get_job(session=session, job_id=job_id)
            queue = job.queue if job is not None else None
        if queue is not None:
            send_training(settings, job_id, queue)
            requeued.append(job_id)
    if requeued:
        log.warning("requeued jobs with stale heartbeats: %s", requeued)
    return requeued


class StaleJobReaper:
    """Checks for stale jobs now and then, from a thread in each worker's main process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stale-job-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        interval = max(self.settings.stale_after_seconds / 2, 0.5)
        while True:
            try:
                requeue_stale_jobs(self.settings)
            except Exception:  # noqa: BLE001 - the database may be briefly away; try later
                log.exception("stale-job check failed")
            if self._stop.wait(interval):
                return
