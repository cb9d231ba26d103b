"""The serving choice is cached per serving generation: a warm /predict reads one row and sorts
nothing, and the next request after a worker finishes a better job (another process), a
promotion or a deletion answers with the new choice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_testlib import Catalog, one_jpeg
from sqlalchemy.orm import Session

from core.db import get_engine
from core.settings import Settings
from core.tables import JobStatus
from tests.service.readpaths_testlib import captured_sql

REPO = Path(__file__).resolve().parents[2]


def answering_job(client: TestClient) -> int:
    response = client.post("/predict", files=one_jpeg())
    assert response.status_code == 200, response.text
    return response.json()["model"]["job_id"]


def serving_job(client: TestClient) -> int:
    response = client.get("/models/serving")
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def finish_in_another_process(
    settings: Settings, job_id: int, accuracy: float, bundle: Path
) -> None:
    """What a worker process does at the end of a run: best epoch, bundle row, succeeded."""
    script = textwrap.dedent(f"""
        from core import repository as repo
        from core.db import session_scope
        from core.specs import EpochMetrics
        from core.tables import JobStatus
        with session_scope({settings.database!r}) as session:
            repo.upsert_metric(session=session, job_id={job_id}, metrics=EpochMetrics(
                epoch=1, train_loss=0.5, train_accuracy=0.9, val_loss=0.4,
                val_accuracy={accuracy}, lr=0.1, epoch_seconds=1.0,
                train_images_per_second=10.0, generalization_gap=0.0, is_best=True))
            repo.upsert_checkpoint(session=session, job_id={job_id}, kind="bundle", epoch=1,
                                   path={str(bundle)!r}, size_bytes=1, sha256="0" * 64)
            repo.finish_job(session=session, job_id={job_id}, status=JobStatus.succeeded)
    """)
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)


def test_a_warm_predict_reads_one_row_and_sorts_nothing(
    client: TestClient, catalog: Catalog, settings: Settings
) -> None:
    snacks = catalog.dataset()
    for accuracy in (0.5, 0.7, 0.6):
        catalog.job(snacks, accuracy=accuracy)
    answering_job(client)  # computes and caches the choice
    with captured_sql(get_engine(settings.database)) as statements:
        answering_job(client)
        serving_job(client)
    assert len(statements) == 2, statements  # one generation read per request
    assert all("serving_generation" in sql and "ORDER BY" not in sql for sql, _ in statements)


@pytest.mark.slow
def test_a_better_job_finished_by_another_process_serves_next(
    client: TestClient, catalog: Catalog, settings: Settings, session: Session
) -> None:
    snacks = catalog.dataset()
    first = catalog.job(snacks, accuracy=0.6)
    running = catalog.job(snacks, accuracy=None, loss=None, bundle=None, status=JobStatus.running)
    assert answering_job(client) == first.id and serving_job(client) == first.id
    finish_in_another_process(settings, running.id, 0.9, catalog.bundles["b"])
    assert answering_job(client) == running.id
    assert serving_job(client) == running.id


@pytest.mark.slow
def test_a_worse_job_finishing_changes_nothing(
    client: TestClient, catalog: Catalog, settings: Settings
) -> None:
    snacks = catalog.dataset()
    best = catalog.job(snacks, accuracy=0.8)
    running = catalog.job(snacks, accuracy=None, loss=None, bundle=None, status=JobStatus.running)
    assert answering_job(client) == best.id
    finish_in_another_process(settings, running.id, 0.3, catalog.bundles["a"])
    assert answering_job(client) == best.id
    listed = client.get("/models").json()
    assert [m["job_id"] for m in listed["data"]] == [best.id, running.id]
    assert listed["count"] == 2 and [m["serving"] for m in listed["data"]] == [True, False]


def test_promotion_and_its_undoing_switch_the_cached_choice(
    client: TestClient, catalog: Catalog
) -> None:
    snacks = catalog.dataset()
    best = catalog.job(snacks, accuracy=0.9)
    other = catalog.job(snacks, accuracy=0.4)
    assert answering_job(client) == best.id
    assert client.post(f"/models/{other.id}/promote").status_code == 200
    assert answering_job(client) == other.id and serving_job(client) == other.id
    assert client.delete(f"/models/{other.id}/promote").status_code == 204
    assert answering_job(client) == best.id


def test_deleting_the_serving_job_switches_to_the_next(
    client: TestClient, catalog: Catalog, session: Session
) -> None:
    snacks = catalog.dataset()
    runner_up = catalog.job(snacks, accuracy=0.7)
    best = catalog.job(snacks, accuracy=0.9)
    assert answering_job(client) == best.id
    assert client.delete(f"/jobs/{best.id}").status_code == 204
    assert answering_job(client) == runner_up.id
    assert client.get("/models").json()["count"] == 1
