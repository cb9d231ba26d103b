"""Searches on the embedded defaults: validation, and a small search run trial by trial here."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
from fastapi.testclient import TestClient

from core import repository as repo
from core.db import session_scope
from core.search import optuna_url
from core.settings import Settings
from core.tables import Job, JobStatus
from workers.jobs import run_job

TINY = {"epochs": 2, "warmup_epochs": 0, "image_size": 32, "batch_size": 8, "eval_batch_size": 16}


@pytest.fixture
def dataset_id(client: TestClient, synth_zip: Path) -> int:
    response = client.post("/datasets", files={"file": ("d.zip", synth_zip.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def search_body(dataset_id: int, **changes: object) -> dict[str, object]:
    return {
        "dataset_id": dataset_id,
        "architecture": {"name": "resnet34"},
        "preset": "recommended",
        "hyperparameters": TINY,
        "space": {"lr": {"low": 1e-3, "high": 0.1, "log": True}},
        "n_trials": 2,
        "seed": 3,
    } | changes


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"space": {"colour": [1, 2]}}, "space.colour", "not a hyperparameter"),
        ({"space": {"lr": {"low": 0.1, "high": 20}}}, "space.lr.high", "less than or equal to 10"),
        ({"space": {"lr": {"low": 0.1, "high": 0.01}}}, "space.lr.high", "greater than low"),
        ({"space": {"lr": {"low": 0, "high": 0.1, "log": True}}}, "space.lr.low", "log scale"),
        ({"space": {"optimizer": ["sgd", "rmsprop"]}}, "space.optimizer.1", "sgd"),
        ({"space": {"optimizer": {"low": 1, "high": 2}}}, "space.optimizer", "not numeric"),
        ({"space": {"epochs": {"low": 1, "high": 5}}}, "space.epochs", "fixed for a search"),
        ({"space": {"batch_size": {"low": 4.5, "high": 8}}}, "space.batch_size.low", "whole"),
        ({"sampler": "grid"}, "sampler", "list of choices"),
        ({"hyperparameters": {"test_fraction": 0}}, "hyperparameters.test_fraction", "test part"),
        ({"n_trials": 0}, "n_trials", "greater than or equal to 1"),
        ({"pruner": "sometimes"}, "pruner", "median"),
    ],
)
def test_bad_searches_get_422_naming_the_field(
    client: TestClient, dataset_id: int, changes: dict, field: str, words: str
) -> None:
    response = client.post("/searches", json=search_body(dataset_id, **changes))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and words in response.json()["detail"]


def test_unknown_dataset_or_search_is_404(client: TestClient) -> None:
    assert client.post("/searches", json=search_body(99)).status_code == 404
    assert client.get("/searches/5").status_code == 404
    assert client.post("/searches/5/cancel").status_code == 404


def run_trials(settings: Settings, search_id: int) -> int:
    """Play the worker: run the search's queued trial jobs until it has none left."""
    ran = 0
    while True:
        with session_scope(settings.database) as session:
            queued = [
                job.id
                for job in session.query(Job).filter_by(
                    search_id=search_id, status=JobStatus.queued
                )
            ]
        if not queued:
            return ran
        for job_id in queued:
            run_job(settings, job_id)
            ran += 1


@pytest.mark.slow
def test_a_search_runs_its_trials_as_jobs_and_reports_the_best(
    client: TestClient, settings: Settings, dataset_id: int
) -> None:
    created = client.post("/searches", json=search_body(dataset_id))
    assert created.status_code == 201, created.text
    search = created.json()
    assert created.headers["location"] == f"/searches/{search['id']}"
    assert search["status"] == "running" and search["max_parallel"] == 1  # SQLite: one at a time
    assert search["hyperparameters"]["test_fraction"] == 0.15  # the recommended hold-out
    assert run_trials(settings, search["id"]) == 2

    detail = client.get(f"/searches/{search['id']}").json()
    assert detail["status"] == "succeeded" and detail["finished_at"] is not None
    trials = detail["trials"]
    assert [t["number"] for t in trials] == [0, 1] and {t["state"] for t in trials} == {"complete"}
    assert trials[0]["params"]["lr"] != trials[1]["params"]["lr"]
    best = max(trials, key=lambda t: t["value"])
    assert detail["best_trial"]["number"] == best["number"]
    with session_scope(settings.database) as session:
        for trial in trials:
            job = repo.get_job(session=session, job_id=trial["job_id"])
            assert job is not None and job.group_id == search["group_id"]
            assert job.hyperparameters["lr"] == trial["params"]["lr"]
            assert trial["value"] == job.best_val_accuracy and trial["epochs_run"] == 2
            assert job.test_metrics is not None and trial["test_accuracy"] == job.test_accuracy
    colours = matplotlib.rcParams["axes.prop_cycle"]
    for kind in ("history", "parallel"):
        plot = client.get(f"/searches/{search['id']}/{kind}.png")
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    assert matplotlib.rcParams["axes.prop_cycle"] == colours  # Optuna's style stays in its plots
    listed = client.get("/searches").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == search["id"]
    assert client.post(f"/searches/{search['id']}/cancel").status_code == 409  # already over
    assert Path(optuna_url(settings.database).removeprefix("sqlite:///")).is_file()


@pytest.mark.slow
def test_cancelling_a_search_cancels_its_queued_trial(
    client: TestClient, settings: Settings, dataset_id: int
) -> None:
    search = client.post("/searches", json=search_body(dataset_id, n_trials=3)).json()
    cancelled = client.post(f"/searches/{search['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    detail = client.get(f"/searches/{search['id']}").json()
    assert [t["state"] for t in detail["trials"]] == ["fail"]
    assert [t["job_status"] for t in detail["trials"]] == ["cancelled"]
    assert run_trials(settings, search["id"]) == 0  # nothing more is created or run
