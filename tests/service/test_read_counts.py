"""Reads that span many jobs send a number of SQL statements that does not grow with the jobs:
comparisons and their curves, the study report, and every list endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from readpaths_testlib import count_statements

from analysis.study import gather_study
from bench.scale_rows import add_datasets, seed_jobs
from core.db import get_engine, open_session
from core.settings import Settings, get_settings


def add_jobs(settings: Settings, jobs: int, dataset_ids: list[int] | None = None) -> None:
    with open_session(settings.database) as session:
        seed_jobs(
            session,
            jobs=jobs,
            dataset_ids=dataset_ids or add_datasets(session, 2),
            bundle_path="/nowhere/bundle.pt",
            epochs=4,
        )
        session.commit()


def statements(settings: Settings, client: TestClient, path: str) -> int:
    def request() -> None:
        response = client.get(path)
        assert response.status_code == 200, response.text

    return count_statements(get_engine(settings.database), request)


def ids(first: int, count: int) -> str:
    return ",".join(str(job_id) for job_id in range(first, first + count))


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["/compare", "/compare/curves.png"])
def test_a_comparison_costs_the_same_statements_for_2_or_20_jobs(
    settings: Settings, client: TestClient, endpoint: str
) -> None:
    add_jobs(settings, 24)
    two = statements(settings, client, f"{endpoint}?jobs={ids(1, 2)}")
    twenty = statements(settings, client, f"{endpoint}?jobs={ids(1, 20)}")
    assert two == twenty <= 3


LISTS = [
    "/jobs",
    "/jobs?status=succeeded&architecture=resnet34",
    "/datasets",
    "/models",
    "/models?dataset_id=1",
    "/models/serving",
    "/jobs/3/metrics",
]


def test_list_endpoints_cost_the_same_statements_at_30_and_330_jobs(
    settings: Settings, client: TestClient
) -> None:
    add_jobs(settings, 30)
    # The first request after the jobs changed also computes the serving choice of each
    # dataset on the page (two lookups each: here at most two datasets); later ones do not.
    before = {path: [statements(settings, client, path) for _ in range(2)] for path in LISTS}
    add_jobs(settings, 300, dataset_ids=[1, 2])
    after = {path: [statements(settings, client, path) for _ in range(2)] for path in LISTS}
    assert {path: warm for path, (_, warm) in after.items()} == {
        path: warm for path, (_, warm) in before.items()
    }
    assert all(warm <= 3 and cold <= 3 + 2 * 2 for cold, warm in after.values()), after
    assert all(warm <= 3 and cold <= 3 + 2 * 2 for cold, warm in before.values()), before


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("FOODLAB_HOME", str(tmp_path / "study-home"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_the_study_report_reads_its_jobs_in_a_constant_number_of_statements(
    home: Settings,
) -> None:
    from cli.study_local import LocalBackend

    backend = LocalBackend(device="cpu")
    add_jobs(home, 24)
    engine = get_engine(home.database)
    two = count_statements(engine, lambda: gather_study(backend, [1, 2], None))
    twelve = count_statements(engine, lambda: gather_study(backend, list(range(1, 13)), None))
    assert two == twelve
