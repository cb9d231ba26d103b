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
        dataset = repo.add_dataset(
            session=session,
            dataset=Dataset(
                name="d", path="/tmp/no-such-dataset-d", source="folder", fingerprint="f"
            ),
        )
        # 32 px: the latency a finished run measures (ResNet-34, 30 runs) takes milliseconds.
        job = Job(
            dataset_id=dataset.id,
            architecture="resnet34",
            hyperparameters={"epochs": 1, "image_size": 32},
        )
        repo.add_jobs(session=session, jobs=[job])
        return job.id


def claim(settings: Settings, job_id: int, worker: str, stale_after: float = 60) -> int | None:
    with session_scope(settings.database) as session:
        return repo.claim_job(
            session=session, job_id=job_id, worker=worker, stale_after=stale_after
        )


def age_heartbeat(settings: Settings, job_id: int, seconds: float) -> None:
    with session_scope(settings.database) as session:
        # A worker that went quiet: no data-access function backdates a heartbeat.
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


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
    first = claim(settings, job_id, "a:1")
    age_heartbeat(settings, job_id, 120)
    second = claim(settings, job_id, "b:2")
    assert first == 1 and second == 2  # the lease is the fencing token
    job = load(settings, job_id)
    assert job.worker == "b:2" and job.attempts == 2
    with session_scope(settings.database) as session:
        # The old worker, if it was only slow, learns that the job is no longer its own.
        assert not repo.heartbeat(session=session, job_id=job_id, lease=first)
        assert repo.heartbeat(session=session, job_id=job_id, lease=second)


def test_reaper_requeues_only_stale_jobs(settings: Settings, job_id: int) -> None:
    assert claim(settings, job_id, "a:1")
    with session_scope(settings.database) as session:
        assert repo.stale_jobs(session=session, stale_after=60) == []
    age_heartbeat(settings, job_id, 120)
    with session_scope(settings.database) as session:
        assert repo.stale_jobs(session=session, stale_after=60) == [job_id]
        assert (
            repo.requeue_if_stale(session=session, job_id=job_id, stale_after=60, max_attempts=3)
            == JobStatus.queued
        )
        assert (
            repo.requeue_if_stale(session=session, job_id=job_id, stale_after=60, max_attempts=3)
            is None
        )
    job = load(settings, job_id)
    assert job.status == JobStatus.queued and "a:1 stopped heart-beating" in job.last_failure


def test_a_job_is_failed_once_max_attempts_workers_died(settings: Settings, job_id: int) -> None:
    for attempt in range(1, 4):
        assert claim(settings, job_id, f"w:{attempt}") == attempt
        repo_update_progress(settings, job_id, epoch=attempt)
        age_heartbeat(settings, job_id, 120)
        with session_scope(settings.database) as session:
            status = repo.requeue_if_stale(
                session=session, job_id=job_id, stale_after=60, max_attempts=3
            )
        assert status == (JobStatus.failed if attempt == 3 else JobStatus.queued)
    job = load(settings, job_id)
    assert job.error_message.startswith("the worker died 3 times while running this job")
    assert "w:3 stopped heart-beating during epoch 3" in job.error_message
    assert not claim(settings, job_id, "w:4")


def test_a_redelivered_message_does_not_exceed_max_attempts(
    settings: Settings, job_id: int
) -> None:
    assert claim(settings, job_id, "w:1")
    age_heartbeat(settings, job_id, 120)
    with session_scope(settings.database) as session:
        # A running job whose worker died, found by a message rather than by the reaper.
        assert repo.fail_if_exhausted(
            session=session, job_id=job_id, stale_after=60, max_attempts=1
        )
    assert load(settings, job_id).status == JobStatus.failed


def test_cancelling_a_job_whose_worker_died_ends_it_at_once(
    settings: Settings, job_id: int
) -> None:
    assert claim(settings, job_id, "a:1")
    age_heartbeat(settings, job_id, 120)
    with session_scope(settings.database) as session:
        job = repo.request_cancel(
            session=session, job=repo.get_job(session=session, job_id=job_id), stale_after=60
        )
        assert job.status == JobStatus.cancelled


def test_a_live_job_is_cancelled_at_its_next_batch(settings: Settings, job_id: int) -> None:
    assert claim(settings, job_id, "a:1")
    with session_scope(settings.database) as session:
        job = repo.request_cancel(
            session=session, job=repo.get_job(session=session, job_id=job_id), stale_after=60
        )
        assert job.status == JobStatus.running and job.cancel_requested


def test_queued_jobs_not_sent_recently_are_swept(settings: Settings, job_id: int) -> None:
    with session_scope(settings.database) as session:
        assert [job.id for job in repo.unsent_jobs(session=session, resend_after=60)] == [job_id]
        repo.mark_enqueued(session=session, job_ids=[job_id])
        assert repo.unsent_jobs(session=session, resend_after=60) == []
        assert [job.id for job in repo.unsent_jobs(session=session, resend_after=0)] == [job_id]


def test_a_handed_back_job_keeps_its_attempt_budget(settings: Settings, job_id: int) -> None:
    lease = claim(settings, job_id, "a:1")
    with session_scope(settings.database) as session:
        assert repo.release_job(
            session=session, job_id=job_id, lease=lease, reason="shutdown", counts_as_attempt=False
        )
        assert not repo.release_job(
            session=session, job_id=job_id, lease=lease, reason="again", counts_as_attempt=False
        )
    job = load(settings, job_id)
    assert job.status == JobStatus.queued and job.attempts == 0 and job.lease == 1


def repo_update_progress(settings: Settings, job_id: int, epoch: int) -> None:
    with session_scope(settings.database) as session:
        repo.record_progress(
            session=session,
            job_id=job_id,
            epoch=epoch,
            batch=1,
            total_batches=2,
            percent=10.0,
            eta_seconds=None,
        )


def test_finished_and_cancelled_jobs_are_never_claimed(settings: Settings, job_id: int) -> None:
    with session_scope(settings.database) as session:
        repo.request_cancel(
            session=session, job=repo.get_job(session=session, job_id=job_id), stale_after=60
        )
    assert not claim(settings, job_id, "a:1")
    assert load(settings, job_id).status == JobStatus.cancelled


def test_a_job_on_a_vanished_dataset_fails_with_a_message(settings: Settings, job_id: int) -> None:
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


def test_a_succeeded_job_shows_its_last_epoch_at_100_percent(
    settings: Settings, job_id: int
) -> None:
    # Progress writes are throttled: the last one can be from epoch 1 when epoch 2 ends.
    with session_scope(settings.database) as session:
        assert repo.claim_job(session=session, job_id=job_id, worker="a:1", stale_after=60)
        repo.record_progress(
            session=session,
            job_id=job_id,
            epoch=1,
            batch=2,
            total_batches=5,
            percent=20.0,
            eta_seconds=30.0,
        )
        for epoch in (1, 2):
            repo.upsert_metric(
                session=session,
                job_id=job_id,
                metrics=EpochMetrics(
                    epoch=epoch,
                    train_loss=1.0,
                    train_accuracy=0.5,
                    val_loss=1.0,
                    val_accuracy=0.5,
                    lr=0.1,
                    epoch_seconds=1.0,
                    train_images_per_second=10.0,
                    generalization_gap=0.0,
                ),
            )
        repo.finish_job(session=session, job_id=job_id, status=JobStatus.succeeded)
    job = load(settings, job_id)
    assert (job.progress_epoch, job.progress_batch, job.progress_total_batches) == (2, 5, 5)
    assert job.progress_percent == 100.0 and job.eta_seconds is None


def test_a_cancelled_job_keeps_the_progress_it_made(settings: Settings, job_id: int) -> None:
    with session_scope(settings.database) as session:
        repo.record_progress(
            session=session,
            job_id=job_id,
            epoch=1,
            batch=2,
            total_batches=5,
            percent=20.0,
            eta_seconds=30.0,
        )
        repo.finish_job(session=session, job_id=job_id, status=JobStatus.cancelled)
    job = load(settings, job_id)
    assert (job.progress_epoch, job.progress_batch, job.progress_percent) == (1, 2, 20.0)


def finished_run(*_: object, **__: object) -> object:
    from workers.engine.callbacks import RunResult

    return RunResult(
        status="completed",
        epochs=[],
        best_epoch=None,
        class_names=["a", "b"],
        skipped=[],
        last_checkpoint=None,
        best_checkpoint=None,
        bundle=None,
        num_parameters=1,
        gflops=0.0,
    )


def test_latency_is_best_effort(
    settings: Settings, job_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.jobs

    def broken(*_: object, **__: object) -> float:
        raise RuntimeError("no CPU timer (simulated)")

    monkeypatch.setattr(workers.jobs, "train", finished_run)
    monkeypatch.setattr(workers.jobs, "measure_latency_ms", broken)
    assert workers.jobs.run_job(settings, job_id) == JobStatus.succeeded
    assert load(settings, job_id).status == JobStatus.succeeded


def test_an_error_outside_training_still_ends_the_job(
    settings: Settings, job_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever fails after training (here: recording the test score), the job is terminal."""
    import workers.jobs

    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("bundle export failed (simulated)")

    monkeypatch.setattr(workers.jobs, "train", finished_run)
    monkeypatch.setattr(workers.jobs, "record_inference_latency", explode)
    assert workers.jobs.run_job(settings, job_id) == JobStatus.failed
    job = load(settings, job_id)
    assert job.error_message == "RuntimeError: bundle export failed (simulated)"


@pytest.mark.slow
def test_a_worker_that_lost_its_lease_writes_no_end(
    settings: Settings, job_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.jobs

    def taken_over(*_: object, **__: object) -> object:
        age_heartbeat(settings, job_id, 120)
        assert claim(settings, job_id, "b:2")  # another worker takes the job meanwhile
        return finished_run()

    monkeypatch.setattr(workers.jobs, "train", taken_over)
    assert workers.jobs.run_job(settings, job_id) is None
    job = load(settings, job_id)
    assert job.status == JobStatus.running and job.worker == "b:2" and job.lease == 2
