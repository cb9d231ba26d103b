"""`foodlab job retry|cancel ID` against the app in this process (embedded database/broker)."""

from __future__ import annotations

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import cli.jobs
from core import repository as repo
from core.db import session_scope
from core.settings import Settings
from core.tables import Dataset, Job, JobStatus


@pytest.fixture
def foodlab(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(cli.jobs, "make_client", lambda url, token: TestClient(client.app))
    app = typer.Typer()
    app.callback()(lambda: None)
    cli.jobs.register(app)
    return app


def a_job(settings: Settings, status: JobStatus) -> int:
    with session_scope(settings.database) as session:
        dataset = repo.add_dataset(
            session=session,
            dataset=Dataset(name="d", path="/tmp/d", source="folder", fingerprint="f"),
        )
        job = Job(
            dataset_id=dataset.id,
            architecture="resnet34",
            hyperparameters={"epochs": 1},
            status=status,
            attempts=3,
            error_message="the worker died 3 times",
        )
        repo.add_jobs(session=session, jobs=[job])
        return job.id


def test_retry_queues_a_failed_job_with_a_fresh_attempt_budget(
    foodlab: typer.Typer, client: TestClient, settings: Settings
) -> None:
    job_id = a_job(settings, JobStatus.failed)
    result = CliRunner().invoke(foodlab, ["job", "retry", str(job_id)])
    assert result.exit_code == 0, result.output
    assert f"job {job_id} is queued" in result.output
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["attempts"] == 0 and job["error"] is None


def test_retry_of_a_running_job_is_refused_with_the_reason(
    foodlab: typer.Typer, settings: Settings
) -> None:
    job_id = a_job(settings, JobStatus.running)
    result = CliRunner().invoke(foodlab, ["job", "retry", str(job_id)])
    assert result.exit_code == 1
    assert "only failed or cancelled jobs can be retried (HTTP 409)" in result.output


def test_cancel_of_a_queued_job_ends_it_at_once(foodlab: typer.Typer, settings: Settings) -> None:
    job_id = a_job(settings, JobStatus.queued)
    result = CliRunner().invoke(foodlab, ["job", "cancel", str(job_id)])
    assert result.exit_code == 0, result.output
    assert f"job {job_id} is cancelled" in result.output
