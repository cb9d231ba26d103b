"""At 10,000 jobs the list, count and model-selection queries walk an index, on both databases.

The statements are the ones the code sends (captured with an event listener), planned with
EXPLAIN QUERY PLAN on SQLite and EXPLAIN on PostgreSQL with the statistics a running system
has (SQLite: refreshed when a job finishes; PostgreSQL: autovacuum's ANALYZE).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from readpaths_testlib import captured_sql, plan, reads, sorts, table_scans_of_jobs
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench.scale_rows import add_datasets, seed_jobs
from core import repository as repo
from core import servable
from core.db import get_engine, open_session, refresh_statistics
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Job, JobStatus
from tests.support import PG_ADMIN

JOBS = 10_000


def seeded(url: str) -> str:
    upgrade(url)
    with open_session(url) as session:
        datasets = add_datasets(session, 3)
        seed_jobs(session, jobs=JOBS, dataset_ids=datasets, bundle_path="/nowhere", epochs=2)
        session.commit()
    if url.startswith("sqlite"):
        refresh_statistics(url)  # what every finished job does
    else:
        with get_engine(url).connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE")  # what autovacuum does after a bulk load
            )
    return url


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return seeded(f"sqlite:///{tmp_path_factory.mktemp('plans') / 'jobs.db'}")


@pytest.fixture(scope="module")
def postgres_seeded() -> Iterator[str]:
    name = f"foodlab_plans_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield seeded(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    finally:
        get_engine.cache_clear()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Seeding 10,000 jobs takes seconds: slow on SQLite too (test_read_counts stays in the fast lane).
@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.slow),
        pytest.param("postgresql", marks=pytest.mark.integration),
    ]
)
def url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_seeded"
    return request.getfixturevalue(fixture)


def planned(url: str, action: Callable[[Session], object]) -> list[tuple[str, list[str]]]:
    """(statement, plan lines) of every SELECT that `action` sends."""
    engine: Engine = get_engine(url)
    with open_session(url) as session, captured_sql(engine) as statements:
        action(session)
    return [(sql, plan(engine, sql, params)) for sql, params in reads(statements)]


def assert_walks_an_index(
    url: str, action: Callable[[Session], object], *, sorted_by_index: bool = False
) -> None:
    """No statement of `action` reads the whole jobs table; with `sorted_by_index`, none sorts
    either (the index gives the order, so a LIMIT stops early)."""
    engine = get_engine(url)
    queries = planned(url, action)
    assert queries, "the action sent no SELECT"
    for sql, lines in queries:
        assert lines and not table_scans_of_jobs(engine, lines), f"{sql}\n-> {lines}"
        if sorted_by_index:
            assert not sorts(engine, lines), f"{sql}\n-> {lines}"


JOB_FILTERS = [
    {"status": JobStatus.succeeded},
    {"status": JobStatus.failed},
    {"status": JobStatus.running},
    {"architecture": "se_resnet34"},
    {"architecture": "se_resnet34", "status": JobStatus.succeeded},
    {"dataset_id": 2},
    {"dataset_id": 2, "status": JobStatus.failed},
    {"group_id": "00000010-0000-4000-8000-000000000000"},
]


@pytest.mark.parametrize("filters", JOB_FILTERS, ids=lambda f: ",".join(f))
def test_filtered_job_lists_and_counts_walk_an_index(url: str, filters: dict) -> None:
    # The planner may sort a small filtered set rather than walk a longer index in order.
    assert_walks_an_index(
        url, lambda session: repo.list_jobs(session=session, offset=100, limit=50, **filters)
    )


def test_the_unfiltered_job_list_reads_one_page_and_counts_on_an_index(url: str) -> None:
    engine = get_engine(url)
    (count_sql, count_plan), (page_sql, page_plan) = planned(
        url, lambda session: repo.list_jobs(session=session, limit=50)
    )
    # Counting every job touches every entry of some index (no database keeps a row count),
    # but never the table's rows; the page walks the primary key newest first and stops.
    if engine.dialect.name == "sqlite":
        assert any("COVERING INDEX" in line for line in count_plan), count_plan
        assert not any("TEMP B-TREE" in line for line in page_plan), page_plan
    else:
        assert any(line.startswith("Index Only Scan jobs") for line in count_plan), count_plan
        assert "Sort" not in page_plan and not any("Seq Scan" in x for x in page_plan), page_plan


SELECTIONS = {
    "best of a dataset": lambda s: servable.serving_choice(session=s, dataset_id=2),
    "default dataset": lambda s: servable.default_dataset_id(session=s),
    "one job's model": lambda s: servable.servable_model(session=s, job_id=5000),
    "model page": lambda s: servable.servable_models(session=s, offset=100, limit=50),
    "model page of a dataset": lambda s: servable.servable_models(session=s, dataset_id=3),
}


@pytest.mark.parametrize("name", SELECTIONS)
def test_model_selection_reads_the_first_index_entries_in_order(url: str, name: str) -> None:
    assert_walks_an_index(url, SELECTIONS[name], sorted_by_index=True)


def test_a_promoted_job_is_found_through_an_index(url: str) -> None:
    with open_session(url) as session:
        choice = servable.serving_choice(session=session, dataset_id=1)
        assert choice is not None
        job = repo.require_job(session=session, job_id=choice.model.job.id - 3)
        repo.promote_job(session=session, job=job)
        promoted = servable.serving_choice(session=session, dataset_id=1)
        assert promoted is not None and promoted.model.job.id == job.id
        session.rollback()  # the other tests see the seeded rows unchanged
    assert_walks_an_index(
        url, lambda s: servable.serving_choice(session=s, dataset_id=1), sorted_by_index=True
    )


def test_servable_counts_walk_an_index(url: str) -> None:
    assert_walks_an_index(url, lambda s: servable.count_servable(session=s, dataset_id=2))


def test_a_dataset_job_count_walks_an_index(url: str) -> None:
    assert_walks_an_index(url, lambda session: repo.count_jobs(session=session, dataset_id=2))


def sqlite_statistics(url: str) -> dict[str, int]:
    """Rows per table as SQLite's planner believes (the first number of sqlite_stat1)."""
    with get_engine(url).connect() as connection:
        rows = connection.execute(text("SELECT tbl, stat FROM sqlite_stat1"))
        return {table: int(stat.split()[0]) for table, stat in rows}


def test_statistics_are_gathered_at_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url)
    with open_session(url) as session:
        seed_jobs(
            session, jobs=200, dataset_ids=add_datasets(session, 1), bundle_path="-", epochs=2
        )
        session.commit()
    with get_engine(url).begin() as connection:
        connection.execute(text("DELETE FROM sqlite_stat1"))  # a database never analyzed
    upgrade(url)  # `foodlab db upgrade`, with nothing left to migrate
    assert {"jobs": 200, "epoch_metrics": 400}.items() <= sqlite_statistics(url).items()


def test_statistics_are_refreshed_when_a_job_finishes(settings: Settings) -> None:
    from workers.jobs import run_job

    url = settings.database
    with open_session(url) as session:
        dataset_ids = add_datasets(session, 1)
        seed_jobs(session, jobs=300, dataset_ids=dataset_ids, bundle_path="-", epochs=1)
        job = Job(
            dataset_id=dataset_ids[0], architecture="resnet34", hyperparameters={"epochs": 1}
        )  # its folder does not exist: fails at once
        session.add(job)
        session.commit()
    assert "jobs" not in sqlite_statistics(url)  # analyzed at upgrade, when it was empty
    assert run_job(settings, job.id) == JobStatus.failed
    assert sqlite_statistics(url)["jobs"] == 301
