"""Celery tasks: thin wrappers that handle messages; the work is in `workers.jobs`."""

from __future__ import annotations

import logging
import os
import sys

from celery.signals import (
    celeryd_after_setup,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from core.db import dispose_engines
from core.queue import TRAIN_TASK, get_celery
from core.settings import get_settings
from workers.device import DeviceUnusable, remember, start_device, worker_device
from workers.jobs import StaleJobReaper, WorkerPoisoned, run_job, shutdown

log = logging.getLogger(__name__)

app = get_celery(get_settings())
_reaper: StaleJobReaper | None = None

# Exit statuses a supervisor (compose's restart policy, systemd) can tell apart.
EXIT_DEVICE_UNUSABLE = 78  # EX_CONFIG: told to use a GPU it cannot use; fix the setting
EXIT_CUDA_POISONED = 75  # EX_TEMPFAIL: an unrecoverable CUDA error; a fresh process may do


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)
def train_job(job_id: int) -> str | None:
    settings = get_settings()
    try:
        status = run_job(settings, job_id, device=worker_device(settings).kind)
    except WorkerPoisoned as exc:
        # The job is already back in the queue (its message sent again). Leave now: tearing
        # down a broken CUDA context can hang, so no clean-up beyond our presence row.
        log.critical("%s; this worker exits with status %d", exc, EXIT_CUDA_POISONED)
        if _reaper is not None:
            _reaper.stop()
        logging.shutdown()
        os._exit(EXIT_CUDA_POISONED)
    return status.value if status is not None else None


@celeryd_after_setup.connect
def _check_device(**_: object) -> None:
    """Before the first job: pin this worker's GPU, log the versions and devices, and refuse
    to start (rather than fail every job) when the GPU it was told to use is not usable."""
    device = worker_device(get_settings())
    try:
        lines, facts = start_device(device)
    except DeviceUnusable as exc:
        log.critical("refusing to start: %s", exc)
        print(f"error: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_DEVICE_UNUSABLE) from None
    for line in lines:
        log.info("%s", line)
    remember(device, facts)


@worker_ready.connect
def _start_reaper(sender: object = None, **_: object) -> None:
    global _reaper
    _reaper = StaleJobReaper(get_settings(), consumed_queues(sender))
    _reaper.start()


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # A prefork child inherits the parent's pooled connections; sharing a socket across
    # processes corrupts both ends, so the child starts with none of them.
    dispose_engines()


@worker_shutting_down.connect
def _note_shutdown(how: str = "Warm", **_: object) -> None:
    """Warm (one SIGTERM): the job stops at the next batch boundary and goes back to the queue.
    Cold (SIGQUIT, a second Ctrl-C): Celery raises into the task; the job is left resumable."""
    log.warning("%s shutdown: the running job, if any, goes back to the queue", how)
    (shutdown.cold if how == "Cold" else shutdown.warm).set()


def consumed_queues(consumer: object) -> list[str]:
    """The queues this worker takes messages from (its -Q), from the Celery consumer."""
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = getattr(task_consumer, "queues", None) or []
    names = [queue.name for queue in queues]
    if not names and consumer is not None:
        names = list(consumer.app.amqp.queues.consume_from or {})  # type: ignore[attr-defined]
    return names


@worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    if _reaper is not None:
        _reaper.stop()
