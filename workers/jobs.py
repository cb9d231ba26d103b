"""Running one training job for the queue: claim it, train with database callbacks, record the end.

Plain functions, tested without Celery; `workers.tasks` only wraps them. Every write a worker
makes about a job is fenced by its claim's lease (see README, "Recovery"): a worker that was
paused while another took the job over stops without writing.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from core import repository as repo
from core.datasets import scan_dataset
from core.db import refresh_statistics, session_scope
from core.errors import UserError
from core.faults import pause_point
from core.queue import send_training
from core.settings import Settings
from core.specs import ArchitectureSpec, EpochMetrics, Hyperparameters, JobRunInfo, TrainSpec
from core.storage import job_dir
from core.tables import JobStatus
from core.weights import FIELDS as WEIGHT_FIELDS
from core.weights import requested_weights, weights_path
from models import ModelConfigError, build_model, measure_latency_ms
from workers.device import device_record, is_sticky_cuda_error
from workers.engine import train
from workers.engine.callbacks import BatchProgress, CheckpointEvent, RunInfo, TrainingCallback
from workers.trials import LOCAL_QUEUE, TrialReporter, finish_trial

log = logging.getLogger(__name__)

LATENCY_RUNS = 30  # timed after warm-up; the median is kept
USER_ERRORS = (UserError, ModelConfigError)
T = TypeVar("T")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    """This worker's hold on a job: the lease is the fencing token of every write."""

    job_id: int
    lease: int
    worker: str


class LeaseLost(Exception):
    """Another worker claimed the job (this one was paused past stale_after): stop, write
    nothing."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(
            f"job {claim.job_id}: lease {claim.lease} of {claim.worker} was taken "
            "over by another worker"
        )


class WorkerPoisoned(Exception):
    """An unrecoverable CUDA error: the job was handed back, and this process must exit (every
    later CUDA call in it fails too); its supervisor starts a fresh one."""


class ShutdownSignals:
    """Set from Celery's shutdown signal in the worker's main process (workers.tasks)."""

    def __init__(self) -> None:
        self.warm = threading.Event()  # one SIGTERM: stop at the next batch, hand the job back
        self.cold = threading.Event()  # SIGQUIT or a second signal: leave the job resumable


shutdown = ShutdownSignals()


def is_database_outage(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def with_database(settings: Settings, what: str, action: Callable[[], T]) -> T:
    """Run `action`, waiting out a database outage (a restart) for up to
    `database_wait_seconds`; pooled connections are pre-pinged, so the retry reconnects."""
    deadline = time.monotonic() + settings.database_wait_seconds
    delay = 0.5
    while True:
        try:
            return action()
        except Exception as exc:
            if not is_database_outage(exc) or time.monotonic() > deadline:
                raise
            log.warning(
                "database unreachable while %s; retrying in %.1fs: %s",
                what,
                delay,
                str(exc).splitlines()[0],
            )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


@contextmanager
def fenced(settings: Settings, claim: Claim) -> Iterator[Session]:
    """A transaction that first proves the claim still owns the job (and locks its row)."""
    with session_scope(settings.database) as session:
        if not repo.hold_lease(session=session, job_id=claim.job_id, lease=claim.lease):
            raise LeaseLost(claim)
        yield session


def fenced_write(
    settings: Settings, claim: Claim, what: str, write: Callable[[Session], object]
) -> None:
    def attempt() -> None:
        with fenced(settings, claim) as session:
            write(session)

    with_database(settings, what, attempt)


class DatabaseCallback(TrainingCallback):
    """Writes what the engine reports into the job's rows, committed as it happens, each
    write fenced by the claim."""

    def __init__(
        self,
        settings: Settings,
        claim: Claim,
        heartbeat: Heartbeat | None = None,
        progress_interval: float = 1.0,
        device: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.device = device or {}
        self.claim = claim
        self.job_id = claim.job_id
        self.heartbeat = heartbeat
        self.progress_interval = progress_interval
        self._last_progress = 0.0
        self._last_check = 0.0
        self._cancel = False
        self._started = time.monotonic()
        self._total_batches = 0

    def _write(self, what: str, write: Callable[[Session], object]) -> None:
        fenced_write(self.settings, self.claim, what, write)

    def on_run_start(self, info: RunInfo) -> None:
        # A resumed run re-reports what it already did; upserts make that harmless.
        run_info = JobRunInfo(
            class_names=info.class_names,
            train_size=info.train_size,
            val_size=info.val_size,
            test_size=info.test_size,
            skipped=[asdict(item) for item in info.skipped],
            start_epoch=info.start_epoch,
            precision=info.precision,
            # The GPU's fields only when the run is on it (a GPU worker also takes CPU jobs).
            **{
                key: value
                for key, value in self.device.items()
                if key == "worker_device" or info.device.startswith("cuda")
            },
        )

        def write(session: Session) -> None:
            for metrics in info.history:
                repo.upsert_metric(session=session, job_id=self.job_id, metrics=metrics)
            repo.record_run_start(
                session=session,
                job_id=self.job_id,
                device=info.device,
                num_parameters=info.num_parameters,
                gflops=info.gflops,
                run_info=run_info,
            )

        self._write("recording the run's start", write)
        self._total_epochs = info.total_epochs
        self._start_epoch = info.start_epoch

    def on_batch_end(self, progress: BatchProgress) -> None:
        pause_point("batch", progress.epoch)
        self._total_batches = progress.total_batches
        now = time.monotonic()
        if now - self._last_progress < self.progress_interval:
            return
        self._last_progress = now
        try:  # progress is best-effort: a database outage must not stall training
            with fenced(self.settings, self.claim) as session:
                self._record_progress(
                    session, progress.epoch, progress.batch, progress.total_batches
                )
        except Exception as exc:
            if not is_database_outage(exc):
                raise

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        def write(session: Session) -> None:
            repo.upsert_metric(session=session, job_id=self.job_id, metrics=metrics)
            # The epoch's end is exact progress, whatever the throttled batch writes last said.
            self._record_progress(session, metrics.epoch, self._total_batches, self._total_batches)

        self._write(f"recording epoch {metrics.epoch}", write)

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
        self._write(
            f"recording {event.path.name}",
            lambda session: repo.upsert_checkpoint(
                session=session,
                job_id=self.job_id,
                kind=event.kind,
                epoch=event.epoch,
                path=str(event.path),
                size_bytes=event.size_bytes,
                sha256=event.sha256,
            ),
        )

    def before_write(self) -> None:
        self._write("checking the claim before writing a file", lambda session: None)

    def should_stop(self) -> bool:
        """Stop for a cancel or a warm shutdown; raise LeaseLost when the job was taken over."""
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            raise LeaseLost(self.claim)
        if shutdown.warm.is_set():
            return True
        now = time.monotonic()
        if not self._cancel and now - self._last_check >= self.progress_interval:
            self._last_check = now
            try:
                with fenced(self.settings, self.claim) as session:
                    self._cancel = repo.cancel_requested(session=session, job_id=self.job_id)
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
        return self._cancel

    @property
    def cancel_seen(self) -> bool:
        return self._cancel


class Heartbeat:
    """Refreshes the job's heartbeat from a thread, so a long batch never looks like death;
    notices when the claim was lost."""

    def __init__(self, settings: Settings, claim: Claim) -> None:
        self.settings, self.claim = settings, claim
        self.lost = threading.Event()
        self._stop = threading.Event()
        name = f"heartbeat-{claim.job_id}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

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
                    held = repo.heartbeat(
                        session=session, job_id=self.claim.job_id, lease=self.claim.lease
                    )
            except Exception:  # noqa: BLE001 - a missed beat is retried; never kill the job
                log.exception("heartbeat for job %s failed", self.claim.job_id)
                continue
            if not held:
                self.lost.set()
                return


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: a terminal status, or `release` (back to the queue)."""

    status: JobStatus | None = None
    error: str | None = None
    traceback: str | None = None
    release: str | None = None  # why the job goes back to the queue
    counts_as_attempt: bool = False
    poisoned: bool = False  # this process cannot use its GPU any more: it must exit


def run_job(settings: Settings, job_id: int, device: str | None = None) -> JobStatus | None:
    """Train job `job_id` if it is ours to run. Returns its final status, or None if ignored
    (not claimable, handed back to the queue, or taken over by another worker)."""
    claim = with_database(settings, f"claiming job {job_id}", lambda: _claim(settings, job_id))
    if claim is None:
        return None
    outcome: Outcome | None = Outcome(
        JobStatus.failed, "the worker stopped before the job's outcome was known"
    )
    trial: TrialReporter | None = None
    try:
        with session_scope(settings.database) as session:
            job = repo.get_job(session=session, job_id=job_id)
            assert job is not None  # claimed just now
            spec = job_spec(job.architecture, job.architecture_options, job.hyperparameters, device)
            data = Path(job.dataset.path)
            confine_to = _confinement(settings, job.dataset.source, data)
            trial = TrialReporter(settings, job) if job.search_id is not None else None
        with Heartbeat(settings, claim) as beat:
            outcome = _train(
                settings, claim, spec, data, beat, confine_to, [trial] if trial else []
            )
        if trial is not None and trial.pruned and outcome.status == JobStatus.cancelled:
            outcome = Outcome(JobStatus.pruned)
    except LeaseLost as exc:
        log.warning("%s; stopping without writing", exc)
        outcome = None
    except BaseException as exc:
        handled = _outcome_of(exc)
        if handled is None:
            raise  # and the job is recorded as failed with the default message
        outcome = handled
    finally:  # whatever happened, the job ends terminal or back in the queue
        recorded = outcome is not None and _record(settings, claim, outcome)
    if outcome is not None and outcome.poisoned:
        raise WorkerPoisoned(f"job {job_id}: {outcome.release}")
    if not recorded or outcome is None or outcome.status is None:
        return None
    if trial is not None:
        finish_trial(settings, job_id)
    # Every finished job changes the tables' shape a little: keep SQLite's planner informed.
    refresh_statistics(settings.database)
    return outcome.status


def _claim(settings: Settings, job_id: int) -> Claim | None:
    me = worker_name()
    with session_scope(settings.database) as session:
        if repo.fail_if_exhausted(
            session=session,
            job_id=job_id,
            stale_after=settings.stale_after_seconds,
            max_attempts=settings.max_attempts,
        ):
            log.error("job %s: out of attempts, failed", job_id)
            return None
        lease = repo.claim_job(
            session=session, job_id=job_id, worker=me, stale_after=settings.stale_after_seconds
        )
    if lease is None:
        log.info("job %s is not claimable (finished, cancelled or alive elsewhere)", job_id)
        return None
    return Claim(job_id, lease, me)


def _record(settings: Settings, claim: Claim, outcome: Outcome) -> bool:
    """Write the attempt's end, fenced; False when the claim was already lost."""
    try:
        return with_database(
            settings,
            f"recording the end of job {claim.job_id}",
            lambda: _record_once(settings, claim, outcome),
        )
    except Exception:  # noqa: BLE001 - the job stays `running` and is reaped like a dead worker
        log.exception("could not record the end of job %s", claim.job_id)
        return False


def _record_once(settings: Settings, claim: Claim, outcome: Outcome) -> bool:
    with session_scope(settings.database) as session:
        if outcome.release is None:
            assert outcome.status is not None  # an outcome either ends the job or releases it
            # The API shows both: without the server's folders, and bounded.
            error = settings.public_text(outcome.error, 2000) if outcome.error else None
            trace = settings.public_text(outcome.traceback, 20_000) if outcome.traceback else None
            return repo.finish_job(
                session=session,
                job_id=claim.job_id,
                status=outcome.status,
                error=error,
                traceback=trace,
                lease=claim.lease,
            )
        released = repo.release_job(
            session=session,
            job_id=claim.job_id,
            lease=claim.lease,
            reason=outcome.release,
            counts_as_attempt=outcome.counts_as_attempt,
        )
        queue = repo.require_job(session=session, job_id=claim.job_id).queue
    if released:
        log.warning("job %s handed back to the queue: %s", claim.job_id, outcome.release)
        resend(settings, [(claim.job_id, queue)])
    return False


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
    settings: Settings,
    claim: Claim,
    spec: TrainSpec,
    data: Path,
    beat: Heartbeat,
    confine_to: Path | None,
    extra_callbacks: list[TrainingCallback],
) -> Outcome:
    out_dir = job_dir(settings.checkpoints_dir, claim.job_id)
    spec = with_weight_files(spec, settings.weights_root)
    if confine_to is not None and data.is_dir():
        scan_dataset(data, confine_to)  # refuses links leading outside; cheap (stats only)
    callback = DatabaseCallback(settings, claim, beat, device=device_record(settings))
    result = train(
        spec, data, out_dir, callbacks=[callback, *extra_callbacks], cache_dir=settings.cache_dir
    )
    if result.status == "cancelled":
        if shutdown.warm.is_set() and not callback.cancel_seen:
            return Outcome(release="the worker shut down (warm); resumes from the last epoch")
        return Outcome(JobStatus.cancelled)
    test = result.test
    if test is not None:
        fenced_write(
            settings,
            claim,
            "recording the test score",
            lambda session: repo.record_test_metrics(
                session=session, job_id=claim.job_id, metrics=test
            ),
        )
    record_inference_latency(settings, claim, spec, len(result.class_names))
    return Outcome(JobStatus.succeeded)


def _outcome_of(exc: BaseException) -> Outcome | None:
    """What an exception out of training means for the job; None: not ours to handle."""
    if cold_shutdown_started() or isinstance(exc, KeyboardInterrupt | SystemExit):
        # Celery's cold shutdown raises into the task (with the solo pool, NotImplementedError
        # from its attempt to kill the task); the job must stay resumable.
        return Outcome(release="the worker shut down (cold); resumes from the last epoch")
    if not isinstance(exc, Exception):
        return None
    if isinstance(exc, USER_ERRORS):
        return Outcome(JobStatus.failed, str(exc))
    if is_sticky_cuda_error(exc):
        # The GPU context is dead, not the job at fault: the job resumes on another worker (an
        # attempt, so a job that itself triggers it, a device-side assert, ends failed).
        log.critical("unrecoverable CUDA error; the job goes back and the worker exits: %s", exc)
        cause = f"unrecoverable CUDA error on the worker's GPU: {str(exc).splitlines()[0]}"
        return Outcome(release=cause, counts_as_attempt=True, poisoned=True)
    if is_lost_data_loader(exc):
        # Like a lost worker (often the kernel's OOM killer): tried again, within max_attempts.
        return Outcome(release=str(exc).splitlines()[0], counts_as_attempt=True)
    log.error("job failed", exc_info=exc)
    trace = "".join(traceback.format_exception(exc))
    return Outcome(JobStatus.failed, describe_failure(exc), trace)


def cold_shutdown_started() -> bool:
    """Celery runs its cold-shutdown callback (which raises into the task) before sending
    worker_shutting_down, but marks `should_terminate` on the way out of its handler."""
    from celery.worker import state

    return shutdown.cold.is_set() or state.should_terminate is not None


def is_lost_data_loader(exc: BaseException) -> bool:
    """A DataLoader process died: torch says so, or (killed mid-transfer) the pipe from it
    broke inside torch.utils.data."""
    text = str(exc)
    if isinstance(exc, RuntimeError) and "DataLoader worker" in text:
        return "killed" in text or "exited unexpectedly" in text
    if isinstance(exc, ConnectionError | EOFError):
        frames = traceback.extract_tb(exc.__traceback__)
        return any(f"torch{os.sep}utils{os.sep}data" in frame.filename for frame in frames)
    return False


def describe_failure(exc: BaseException) -> str:
    """The message a user reads; a full disk says so in words (torch's writer does not)."""
    message = f"{type(exc).__name__}: {exc}"
    if _is_disk_full(exc) and os.strerror(errno.ENOSPC) not in message:
        message = f"{os.strerror(errno.ENOSPC)} (writing checkpoints): {message}"
    return message


def _is_disk_full(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "file write failed" in str(exc) or os.strerror(errno.ENOSPC) in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def record_inference_latency(
    settings: Settings, claim: Claim, spec: TrainSpec, num_classes: int
) -> None:
    """CPU latency of one image at the job's size, kept in run_info for comparisons.

    The weights do not change the time, so a freshly built model is timed. Best-effort: a
    trained job never fails for want of this number.
    """
    try:
        options = {k: v for k, v in spec.architecture.options.items() if k != "pretrained_weights"}
        model = build_model(spec.architecture.name, num_classes, **options)
        latency_ms = measure_latency_ms(
            model, spec.hyperparameters.image_size, repeats=LATENCY_RUNS
        )
    except Exception:  # noqa: BLE001 - see above
        log.exception("job %s: measuring inference latency failed", claim.job_id)
        return
    fenced_write(
        settings,
        claim,
        "recording latency",
        lambda session: repo.record_inference_latency(
            session=session,
            job_id=claim.job_id,
            inference_ms=latency_ms,
            device="cpu",
            threads=torch.get_num_threads(),
            runs=LATENCY_RUNS,
            load_average=os.getloadavg()[0],
        ),
    )


def resend(settings: Settings, jobs: list[tuple[int, str]]) -> list[int]:
    """Send a message for each (job id, queue) and note when; a failed send is left to the
    sweeper (the job stays `queued` with its old `enqueued_at`)."""
    sent = []
    for job_id, queue in jobs:
        try:
            send_training(settings, job_id, queue)
        except Exception as exc:  # noqa: BLE001 - the broker is away; the sweeper tries again
            log.warning("could not send job %s to the broker: %s", job_id, exc)
            break
        sent.append(job_id)
    if sent:
        with session_scope(settings.database) as session:
            repo.mark_enqueued(session=session, job_ids=sent)
    return sent


def requeue_stale_jobs(settings: Settings, alive: str | None = None) -> list[int]:
    """Settle jobs whose worker stopped heart-beating: back to the queue (they resume from
    `last.pt`; the sweeper sends them), or cancelled, or failed once out of attempts.
    `alive`: this process's own worker name, whose jobs are never its own reaper's to take."""
    with session_scope(settings.database) as session:
        stale = repo.stale_jobs(
            session=session, stale_after=settings.stale_after_seconds, alive=alive
        )
    requeued = []
    for job_id in stale:
        with session_scope(settings.database) as session:  # one unit of work per job
            status = repo.requeue_if_stale(
                session=session,
                job_id=job_id,
                stale_after=settings.stale_after_seconds,
                max_attempts=settings.max_attempts,
            )
        if status == JobStatus.queued:
            requeued.append(job_id)
        elif status is not None:
            log.error("job %s of a dead worker is now %s", job_id, status.value)
    if requeued:
        log.warning("requeued jobs with stale heartbeats: %s", requeued)
    return requeued


def sweep_unsent_jobs(settings: Settings) -> list[int]:
    """Send again the queued jobs that no worker took within `resend_after_seconds` (a lost
    message, a broker restart without persistence, a send that failed)."""
    with session_scope(settings.database) as session:
        jobs = repo.unsent_jobs(
            session=session, resend_after=settings.resend_after_seconds, skip_queues=[LOCAL_QUEUE]
        )
        pending = [(job.id, job.queue) for job in jobs]
    sent = resend(settings, pending) if pending else []
    if sent:
        log.warning("sent queued jobs again: %s", sent)
    return sent


class StaleJobReaper:
    """Reaps stale jobs and re-sends unsent ones now and then, from a thread in each worker's
    main process, and records that this worker is alive and which queues it consumes."""

    def __init__(self, settings: Settings, queues: list[str] | None = None) -> None:
        self.settings = settings
        self.queues = queues or []
        self.name = worker_name()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stale-job-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _record_presence(self) -> None:
        if self.queues:
            with session_scope(self.settings.database) as session:
                repo.record_worker_presence(session=session, name=self.name, queues=self.queues)

    def stop(self) -> None:
        self._stop.set()
        try:
            with session_scope(self.settings.database) as session:
                repo.forget_worker(session=session, name=self.name)
        except Exception:  # noqa: BLE001 - its row then just goes stale
            log.exception("could not remove this worker's presence row")

    def _run(self) -> None:
        # Presence is refreshed well within stale_after, the age at which the API stops
        # counting a worker as alive.
        interval = max(
            min(
                self.settings.stale_after_seconds,
                self.settings.resend_after_seconds,
                2 * self.settings.heartbeat_seconds,
            )
            / 2,
            0.5,
        )
        while True:
            try:
                self._record_presence()
                requeue_stale_jobs(self.settings, alive=worker_name())
                sweep_unsent_jobs(self.settings)
            except Exception as exc:  # noqa: BLE001 - the database may be briefly away
                log.warning(
                    "stale-job check failed (tried again in %.1fs): %s",
                    interval,
                    str(exc).splitlines()[0],
                )
            if self._stop.wait(interval):
                return
