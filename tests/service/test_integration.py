"""End to end with real parts: the API, a real `celery worker` process, a real database/broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.migrate import upgrade
from core.settings import Settings
from core.storage import sha256_of
from tests.support import Worker, client_for, make_settings, wait_until

pytestmark = pytest.mark.integration

JOB_TIMEOUT = 240.0


def production(tmp_path: Path, postgres_url: str, redis_url: str, **extra: object) -> Settings:
    return make_settings(
        tmp_path / "home", database_url=postgres_url, broker_url=redis_url, **extra
    )


def submit(client: TestClient, archive: Path, epochs: int, **hyper: object) -> int:
    dataset = client.post("/datasets", files={"file": ("d.zip", archive.read_bytes())})
    assert dataset.status_code == 201, dataset.text
    body = {
        "dataset_id": dataset.json()["id"],
        "architecture": {"name": "resnet34"},
        "hyperparameters": {"epochs": epochs, "image_size": 32, "batch_size": 8, **hyper},
    }
    job = client.post("/jobs", json=body)
    assert job.status_code == 201, job.text
    return job.json()["id"]


def status_of(client: TestClient, job_id: int) -> dict:
    return client.get(f"/jobs/{job_id}").json()


def finished(client: TestClient, job_id: int) -> dict | None:
    job = status_of(client, job_id)
    return job if job["status"] in {"succeeded", "failed", "cancelled"} else None


def run_two_epochs(
    settings: Settings, archive: Path, start_worker: Callable[[Settings], Worker]
) -> None:
    upgrade(settings.database)
    worker = start_worker(settings)
    with client_for(settings) as client:
        assert client.get("/readyz").status_code == 200
        job_id = submit(client, archive, epochs=2)
        job = wait_until(
            lambda: finished(client, job_id), JOB_TIMEOUT, "job to finish", [worker.log]
        )
        assert job["status"] == "succeeded", job["error"]
        assert job["best"]["epoch"] in (1, 2) and job["progress"]["percent"] == 100.0
        progress = job["progress"]
        assert progress["epoch"] == 2 and progress["batch"] == progress["total_batches"] > 0
        metrics = client.get(f"/jobs/{job_id}/metrics").json()
        assert [row["epoch"] for row in metrics["data"]] == [1, 2]
        assert set(metrics["data"][0]["grad_norms"]) >= {"stem", "stage4", "classifier"}
        checkpoints = client.get(f"/jobs/{job_id}/checkpoints").json()
        assert {row["kind"] for row in checkpoints} == {"last", "best", "bundle"}
        for row in checkpoints:
            path = settings.home / row["path"]  # relative: server folders are not shown
            assert path.is_file() and path.is_relative_to(settings.checkpoints_dir)
            assert sha256_of(path) == row["sha256"] and path.stat().st_size == row["size_bytes"]


def test_job_runs_on_postgres_and_redis(
    tmp_path: Path, postgres_url: str, redis_url: str, synth_zip: Path, start_worker
) -> None:
    run_two_epochs(production(tmp_path, postgres_url, redis_url), synth_zip, start_worker)


def test_job_runs_on_the_embedded_defaults(tmp_path: Path, synth_zip: Path, start_worker) -> None:
    run_two_epochs(make_settings(tmp_path / "home"), synth_zip, start_worker)


def test_killed_worker_job_resumes_elsewhere(
    tmp_path: Path, postgres_url: str, redis_url: str, start_worker
) -> None:
    from demo.dishes import write_dataset_zip

    # Enough batches per epoch that the kill lands mid-training.
    archive = write_dataset_zip(tmp_path / "big.zip", per_class=16, size=40)
    settings = production(
        tmp_path, postgres_url, redis_url, heartbeat_seconds=0.5, stale_after_seconds=4.0
    )
    upgrade(settings.database)
    first = start_worker(settings)
    with client_for(settings) as client:
        job_id = submit(client, archive, epochs=3, batch_size=4)
        wait_until(
            lambda: status_of(client, job_id)["progress"]["epoch"] >= 2,
            JOB_TIMEOUT,
            "epoch 2 to start",
            [first.log],
        )
        first.kill()
        assert status_of(client, job_id)["status"] == "running"  # as the dead worker left it
        second = start_worker(settings)
        job = wait_until(
            lambda: finished(client, job_id), JOB_TIMEOUT, "job to finish", [first.log, second.log]
        )
        assert job["status"] == "succeeded", job["error"]
        assert job["attempts"] == 2
        metrics = client.get(f"/jobs/{job_id}/metrics").json()
        assert [row["epoch"] for row in metrics["data"]] == [1, 2, 3]


def test_cancel_stops_a_running_job(tmp_path: Path, synth_zip: Path, start_worker) -> None:
    settings = make_settings(tmp_path / "home")
    upgrade(settings.database)
    worker = start_worker(settings)
    with client_for(settings) as client:
        job_id = submit(client, synth_zip, epochs=50)
        wait_until(
            lambda: status_of(client, job_id)["status"] == "running",
            JOB_TIMEOUT,
            "job to start",
            [worker.log],
        )
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
        job = wait_until(lambda: finished(client, job_id), JOB_TIMEOUT, "job to stop", [worker.log])
        assert job["status"] == "cancelled"
        assert len(client.get(f"/jobs/{job_id}/metrics").json()["data"]) < 50
