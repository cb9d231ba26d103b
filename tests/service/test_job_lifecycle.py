"""Claiming, heart-beating and reaping jobs: the compare-and-set rules behind recovery."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from core import repository as repo
from core.db import session_scope
from core.settings import Settings
from core.specs import EpochMetrics
from core.tables import Dataset, Job, JobStatus, utcnow


@pytest.fixture
def job_id(settings: Settings) -> int:
    with session_scope(settings.database) as session:
        dataset = repo.add_dataset(session=session, dataset=Dataset(
            name="d", path="/tmp/no-such-dataset-d", source="folder", fingerprint="f"))
        job = Job(dataset_id=dataset.id, architecture="resnet34", hyperparameters={"epochs": 1})
        repo.add_jobs(session=session, jobs=[job])
        return job.id


def claim(settings: Settings, job_id: int, worker: str, stale_after: float = 60) -> bool:
    with session_scope(settings.database) as session:
        return repo.claim_job(session=session, job_id=job_id, worker=worker,
                              stale_after=stale_after)


def age_heartbeat(settings: Settings, job_id: int, seconds: float) -> None:
    with session_scope(settings.database) as session:
        # A worker that went quiet: no data-access function backdates a heartbeat.
        session.execute(update(Job).where(Job.id == job_id)
                        .values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def load(settings: Settings, job_id: int) -> Job:
    with session_scope(settings.database) as session:
        job = repo.get_job(session=session, job_id=job_id)
        assert job is not None
        return job


def test_only_one_worker_claims_a_queued_job(settings: Settings, job_id: int) -> None:
    assert claim(settings, job_id, "a:1")
    assert not claim(settings, job_id, "b:2")  # a duplicate message while a is alive
    job = load(settings, job_id)
    assert job.status == JobStatus.running and job.worker == "a:1" and job.attempts == 1


def test_a_stale_job_is_taken_over(settings: Settings, job_id: int) -> None:
    assert claim(settings, job_id, "a:1")
    age_heartbeat(settings, job_id, 120)
    assert claim(settings, job_id, "b:2")
    job = load(settings, job_id)
    assert job.worker == "b:2" and job.attempts == 2
    with session_scope(settings.database) as session:
        # The old worker, if it was only slow, learns that the job is no longer its own.
        assert not repo.heartbeat(session=session, job_id=job_id, worker="a:1")
        assert repo.heartbeat(session=session, job_id=job_id, worker="b:2")


def test_reaper_requeues_only_stale_jobs(settings: Settings, job_id: int) -> None:
    assert claim(settings, job_id, "a:1")
    with session_scope(settings.database) as session:
        assert repo.stale_jobs(session=session, stale_after=60) == []
    age_heartbeat(settings, job_id, 120)
    with session_scope(settings.database) as session:
        assert repo.stale_jobs(session=session, stale_after=60) == [job_id]
        assert repo.requeue_if_stale(session=session, job_id=job_id, stale_after=60)
        assert not repo.requeue_if_stale(session=session, job_id=job_id, stale_after=60)
    assert load(settings, job_id).status == JobStatus.queued


def test_finished_and_cancelled_jobs_are_never_claimed(settings: Settings, job_id: int) -> None:
    with session_scope(settings.database) as session:
        repo.request_cancel(session=session, job=repo.get_job(session=session, job_id=job_id))
    assert not claim(settings, job_id, "a:1")
    assert load(settings, job_id).status == JobStatus.cancelled


def test_a_job_on_a_vanished_dataset_fails_with_a_message(settings: Settings,
                                                          job_id: int) -> None:
    from workers.jobs import run_job

    assert run_job(settings, job_id) == JobStatus.failed
    job = load(settings, job_id)
    assert job.status == JobStatus.failed and job.finished_at is not None
    # A dataset problem is the user's to fix: a message, no traceback.
    assert "/tmp/no-such-dataset-d" in job.error_message and job.error_traceback is None


def test_an_unexpected_error_is_recorded_with_its_traceback(
    settings: Settings, job_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.jobs

    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(workers.jobs, "train", explode)
    assert workers.jobs.run_job(settings, job_id) == JobStatus.failed
    job = load(settings, job_id)
    assert job.error_message == "RuntimeError: CUDA out of memory (simulated)"
    assert "Traceback" in job.error_traceback and "explode" in job.error_traceback


def test_a_finished_job_is_not_run_again(settings: Settings, job_id: int) -> None:
    from workers.jobs import run_job

    with session_scope(settings.database) as session:
        repo.finish_job(session=session, job_id=job_id, status=JobStatus.succeeded)
    assert run_job(settings, job_id) is None  # a redelivered message is ignored
    assert load(settings, job_id).status == JobStatus.succeeded


def test_a_succeeded_job_shows_its_last_epoch_at_100_percent(settings: Settings,
                                                             job_id: int) -> None:
    # Progress writes are throttled: the last one can be from epoch 1 when epoch 2 ends.
    with session_scope(settings.database) as session:
        assert repo.claim_job(session=session, job_id=job_id, worker="a:1", stale_after=60)
        repo.record_progress(session=session, job_id=job_id, epoch=1, batch=2,
                             total_batches=5, percent=20.0, eta_seconds=30.0)
        for epoch in (1, 2):
            repo.upsert_metric(session=session, job_id=job_id, metrics=EpochMetrics(
                epoch=epoch, train_loss=1.0, train_accuracy=0.5, val_loss=1.0, val_accuracy=0.5,
                lr=0.1, epoch_seconds=1.0, train_images_per_second=10.0,
                generalization_gap=0.0))
        repo.finish_job(session=session, job_id=job_id, status=JobStatus.succeeded)
    job = load(settings, job_id)
    assert (job.progress_epoch, job.progress_batch, job.progress_total_batches) == (2, 5, 5)
    assert job.progress_percent == 100.0 and job.eta_seconds is None


def test_a_cancelled_job_keeps_the_progress_it_made(settings: Settings, job_id: int) -> None:
    with session_scope(settings.database) as session:
        repo.record_progress(session=session, job_id=job_id, epoch=1, batch=2,
                             total_batches=5, percent=20.0, eta_seconds=30.0)
        repo.finish_job(session=session, job_id=job_id, status=JobStatus.cancelled)
    job = load(settings, job_id)
    assert (job.progress_epoch, job.progress_batch, job.progress_percent) == (1, 2, 20.0)
