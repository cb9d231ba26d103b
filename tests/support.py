"""What every test folder shares: settings, API clients, databases and waiting.

Fixtures defined here are made available to every folder by `tests/conftest.py`; helpers are
imported as `from tests.support import ...`. Folder conftests keep only what is theirs.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from core.migrate import upgrade
from core.settings import Settings

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST = "redis://127.0.0.1:6379"
REPO = Path(__file__).resolve().parents[1]


# --- settings and clients ----------------------------------------------------------------------


def make_settings(home: Path, **overrides: object) -> Settings:
    """Embedded defaults (SQLite, filesystem broker) inside `home`, overridden as given."""
    return Settings(home=home, **overrides)  # type: ignore[arg-type]


def migrated_settings(home: Path, **overrides: object) -> Settings:
    """make_settings, its database at the head revision. The embedded SQLite database is a
    copy of one migrated once per test process (running the migrations took most of a fast
    test's time); any other database is upgraded in place."""
    settings = make_settings(home, **overrides)
    if settings.database_url:
        upgrade(settings.database)
    else:
        copy_sqlite(_migrated_sqlite(), Path(settings.database.removeprefix("sqlite:///")))
    return settings


@functools.cache
def _migrated_sqlite() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="foodlab-migrated-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "foodlab.db"
    upgrade(f"sqlite:///{path}")
    return path


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (its WAL included), by SQLite's backup API."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


class _PooledClient(TestClient):
    """A TestClient that hands its app back to the pool when it closes."""

    def __exit__(self, *args: Any) -> None:
        try:
            super().__exit__(*args)
        finally:
            _idle_apps.append(self.app)  # type: ignore[arg-type]


# Apps whose clients have closed. FastAPI builds an app's routes on its first request (a tenth
# of a second on a slow machine, for every API test), so a test reuses a closed one: every
# use replaces the dependency overrides, and the lifespan builds a new model server.
_idle_apps: list[Any] = []


def client_for(settings: Settings, model_server: Any = None) -> TestClient:
    """A client of an app seeing `settings` (and `model_server`, when given, instead of the
    one its lifespan builds), no other client's meanwhile. Use it as a context manager: the
    lifespan runs, and the app is free again afterwards."""
    from service.app import create_app
    from service.deps import current_settings, get_model_server

    app = _idle_apps.pop() if _idle_apps else create_app()
    app.dependency_overrides.clear()
    app.dependency_overrides[current_settings] = lambda: settings
    if model_server is not None:
        app.dependency_overrides[get_model_server] = lambda: model_server
    return _PooledClient(app)


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Migrated embedded settings in a temporary FOODLAB_HOME; a test marked
    `@pytest.mark.settings(**fields)` gets those fields set."""
    marker = request.node.get_closest_marker("settings")
    return migrated_settings(tmp_path / "home", **(marker.kwargs if marker else {}))


# --- one test per architecture -----------------------------------------------------------------

# The study's two networks are built in every lane; a per-architecture test's copies for the
# other variants are marked slow (`make test` runs them, `make test-fast` leaves them out:
# building and running eight ResNet-34s is most of a fast lane's time).
STUDY_ARCHITECTURES = ("resnet34", "plain34")


def per_architecture(cases: Iterable[Any]) -> list[Any]:
    """pytest.param for each case (an architecture name, or a tuple that starts with one),
    marked slow unless it is one of the study's two networks."""
    params = []
    for case in cases:
        values = case if isinstance(case, tuple) else (case,)
        slow = () if values[0] in STUDY_ARCHITECTURES else (pytest.mark.slow,)
        params.append(pytest.param(*values, marks=slow))
    return params


# --- real PostgreSQL and Redis -----------------------------------------------------------------


@contextmanager
def _postgres_database(template: str | None = None) -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL (a copy of `template`, or empty),
    dropped afterwards."""
    name = f"foodlab_test_{uuid.uuid4().hex[:10]}"
    copy_of = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{copy_of}')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from core.db import get_engine

        get_engine.cache_clear()  # engines hold pooled connections that would block DROP
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the machine's PostgreSQL, dropped afterwards."""
    with _postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def _postgres_at_head() -> Iterator[str]:
    """The name of a database migrated to the head revision once per session."""
    from core.db import get_engine

    with _postgres_database() as url:
        upgrade(url)
        get_engine(url).dispose()  # a template may have no open connection
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def migrated_postgres_url(_postgres_at_head: str) -> Iterator[str]:
    """A fresh database at the head revision, copied from one migrated once per session
    (PostgreSQL copies a template database as fast as it creates an empty one)."""
    with _postgres_database(template=_postgres_at_head) as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database number of its own, emptied before and after."""
    index = 1 + uuid.uuid4().int % 15
    url = f"{REDIS_HOST}/{index}"
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    yield url
    connection.flushdb()


# --- worker processes and waiting ----------------------------------------------------------------


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FOODLAB_HOME=str(settings.home),
        FOODLAB_HEARTBEAT_SECONDS=str(settings.heartbeat_seconds),
        FOODLAB_STALE_AFTER_SECONDS=str(settings.stale_after_seconds),
        FOODLAB_WORKER_DEVICE="cpu",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    for key, value in (
        ("FOODLAB_DATABASE_URL", settings.database_url),
        ("FOODLAB_BROKER_URL", settings.broker_url),
    ):
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


class Worker:
    """A real `celery worker` process in its own process group, so kill -9 takes all of it."""

    def __init__(self, settings: Settings, log: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.tasks",
            "worker",
            "--pool",
            "solo",
            "-Q",
            "cpu",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"w{uuid.uuid4().hex[:6]}@%h",
        ]
        self.log = log
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=worker_env(settings),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], Worker]]:
    workers: list[Worker] = []

    def start(settings: Settings) -> Worker:
        worker = Worker(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    logs: list[Path] | tuple[Path, ...] = (),
) -> Any:
    """The predicate's first truthy value; fails after `timeout` s with the logs' tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")
