"""A queued job says when no live worker consumes its queue (a CUDA job and no GPU worker),
from the presence rows real worker processes keep fresh."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core import repository as repo
from core.db import session_scope
from core.settings import Settings
from core.tables import WorkerPresence, utcnow
from tests.support import wait_until


def create(client: TestClient, dataset_id: int, device: str) -> dict:
    response = client.post(
        "/jobs",
        json={
            "dataset_id": dataset_id,
            "architecture": {"name": "resnet34"},
            "hyperparameters": {"epochs": 1, "image_size": 32, "device": device},
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def dataset_id(client: TestClient, synth_zip: Path) -> int:
    response = client.post("/datasets", files={"file": ("d.zip", synth_zip.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_cuda_job_without_a_gpu_worker_says_so(
    client: TestClient, settings: Settings, dataset_id: int
) -> None:
    job = create(client, dataset_id, "cuda")
    assert job["status"] == "queued" and job["queue"] == "gpu"
    assert "no live worker consumes the 'gpu' queue" in job["waiting"]
    with session_scope(settings.database) as session:
        repo.record_worker_presence(session=session, name="gpu-box:1", queues=["gpu"])
    assert client.get(f"/jobs/{job['id']}").json()["waiting"] is None
    with session_scope(settings.database) as session:  # that worker went silent long ago
        row = session.get(WorkerPresence, "gpu-box:1")
        row.seen_at = utcnow() - timedelta(seconds=settings.stale_after_seconds + 1)
    listed = client.get("/jobs").json()["data"][0]
    assert listed["id"] == job["id"] and "'gpu' queue" in listed["waiting"]


@pytest.mark.integration
def test_a_real_worker_records_its_queues_while_it_lives(
    client: TestClient, settings: Settings, dataset_id: int, start_worker
) -> None:
    worker = start_worker(settings)

    def live() -> set[str]:
        with session_scope(settings.database) as session:
            return repo.live_queues(session=session, stale_after=settings.stale_after_seconds)

    wait_until(lambda: "cpu" in live(), 120, "the worker's presence row", [worker.log])
    assert "gpu" not in live()
    assert "'gpu' queue" in create(client, dataset_id, "cuda")["waiting"]
    worker.stop()
    assert live() == set()  # a worker that stops removes its row
