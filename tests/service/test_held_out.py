"""A job with a test part: its best checkpoint's test score is stored and shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from core.tables import JobStatus
from workers.jobs import run_job


@pytest.mark.slow
def test_a_job_with_a_test_part_shows_its_test_score(
    client: TestClient, settings: Settings, synth_zip: Path
) -> None:
    dataset = client.post("/datasets", files={"file": ("d.zip", synth_zip.read_bytes())})
    body = {
        "dataset_id": dataset.json()["id"],
        "architecture": {"name": "resnet34"},
        "hyperparameters": {"epochs": 1, "image_size": 32, "batch_size": 8, "test_fraction": 0.25},
    }
    job_id = client.post("/jobs", json=body).json()["id"]
    assert client.get(f"/jobs/{job_id}").json()["test"] is None  # not scored before the end
    assert run_job(settings, job_id) == JobStatus.succeeded
    job = client.get(f"/jobs/{job_id}").json()
    test = job["test"]
    assert test["num_images"] == 10 and test["epoch"] == job["best"]["epoch"] == 1  # 2 of 8 x 5
    assert sum(map(sum, test["confusion_matrix"])) == 10
    assert set(test) >= {"loss", "accuracy", "per_class_accuracy", "macro_f1"}


def test_the_sum_of_fractions_is_checked(client: TestClient, synth_zip: Path) -> None:
    dataset = client.post("/datasets", files={"file": ("d.zip", synth_zip.read_bytes())})
    body = {
        "dataset_id": dataset.json()["id"],
        "architecture": {"name": "resnet34"},
        "hyperparameters": {"val_fraction": 0.5, "test_fraction": 0.5},
    }
    response = client.post("/jobs", json=body)
    assert response.status_code == 422
    assert "test_fraction" in response.json()["detail"]
