"""A search trial inside its job: report the objective each epoch, stop when pruned, and tell
the study how the job ended (core/search.py holds the rest of the search)."""

from __future__ import annotations

import logging
import warnings

import optuna

import models
from core import search as searches
from core.db import unit_of_work
from core.queue import send_training
from core.settings import Settings
from core.specs import EpochMetrics
from core.tables import Job
from workers.engine.callbacks import RunInfo, TrainingCallback

log = logging.getLogger(__name__)


class TrialReporter(TrainingCallback):
    """Reports each epoch to the job's Optuna trial and asks its pruner whether to go on.

    A resumed job reports the epochs it already ran again; Optuna keeps the first value of a
    step, so no epoch counts twice. After the last epoch nothing is left to prune."""

    def __init__(self, settings: Settings, job: Job) -> None:
        search = job.search
        assert search is not None and job.trial_number is not None
        study = searches.load_study(settings.database, search)
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, job.trial_number
        )
        self.trial = optuna.Trial(study, trial_id)
        self.objective = search.objective
        self.epochs = int(job.hyperparameters.get("epochs", 1))
        self.pruned = False

    def _report(self, metrics: EpochMetrics) -> None:
        value = searches.objective_value(self.objective, metrics.val_accuracy, metrics.val_loss)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "already reported": a resumed epoch, kept once
            self.trial.report(value, metrics.epoch)

    def on_run_start(self, info: RunInfo) -> None:
        for metrics in info.history:
            self._report(metrics)

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        self._report(metrics)
        if metrics.epoch < self.epochs and self.trial.should_prune():
            log.info("trial %s pruned after epoch %s", self.trial.number, metrics.epoch)
            self.pruned = True

    def should_stop(self) -> bool:
        return self.pruned


LOCAL_QUEUE = "local"  # jobs that `foodlab search --local` runs in its own process


def enqueue(settings: Settings) -> searches.Send:
    def send(job_id: int, queue: str) -> None:
        if queue != LOCAL_QUEUE:
            send_training(settings, job_id, queue)

    return send


def finish_trial(settings: Settings, job_id: int) -> None:
    """Tell the study how the job ended and queue the search's next trials. The job's own end
    is already stored: a failure here is logged, and the next finishing trial fills again."""
    try:
        searches.finish_trial(
            unit_of_work=unit_of_work(settings.database),
            database_url=settings.database,
            job_id=job_id,
            canonical_options=models.canonical_options,
            send=enqueue(settings),
        )
    except Exception:  # noqa: BLE001 - the database or Optuna may be briefly away
        log.exception("telling the search how job %s ended failed", job_id)
