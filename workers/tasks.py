"""Celery tasks: thin wrappers that handle messages; the work is in `workers.jobs`."""

from __future__ import annotations

import logging

from celery.signals import worker_ready, worker_shutdown

from core.queue import TRAIN_TASK, get_celery
from core.settings import get_settings
from workers.device import worker_device
from workers.jobs import StaleJobReaper, run_job

log = logging.getLogger(__name__)

app = get_celery(get_settings())
_reaper: StaleJobReaper | None = None


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)
def train_job(job_id: int) -> str | None:
    status = run_job(get_settings(), job_id, device=worker_device(get_settings()))
    return status.value if status is not None else None


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    global _reaper
    _reaper = StaleJobReaper(get_settings())
    _reaper.start()


@worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    if _reaper is not None:
        _reaper.stop()
