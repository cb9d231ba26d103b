"""Engine and sessions. One engine per process and URL; one session per request or task step."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

_created: list[Engine] = []


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=finite_json,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, json_serializer=finite_json)
    _created.append(engine)
    return engine


def dispose_engines() -> None:
    """Forget every engine and pooled connection without closing the sockets, which a parent
    process still uses (call in a forked child before its first query)."""
    for engine in _created:
        engine.dispose(close=False)
    _created.clear()
    get_engine.cache_clear()
    _session_factory.cache_clear()


def finite_json(value: Any) -> str:
    """JSON for a column without inf or NaN: PostgreSQL's JSON type refuses them (SQLite takes
    them), and a non-number is no measurement. A mapping loses such an entry (so
    `{stage: norm}` stays a mapping of floats), a list holds null in its place."""
    return json.dumps(_finite(value), allow_nan=False)


def _nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _finite(value: Any) -> Any:
    if _nonfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items() if not _nonfinite(item)}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache(maxsize=8)
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = _session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# How a caller hands a function its unit of work: each call opens a session that commits on
# success (`unit_of_work(url)`, or a test's own).
UnitOfWork = Callable[[], AbstractContextManager[Session]]


def unit_of_work(url: str) -> UnitOfWork:
    return partial(session_scope, url)


def open_session(url: str) -> Session:
    return _session_factory(url)()


# Rows ANALYZE reads per index: enough for the planner to tell a selective index from an
# unselective one, and a cost of milliseconds however large the tables grow.
ANALYSIS_LIMIT = 1000


def refresh_statistics(url: str) -> None:
    """Bring SQLite's planner statistics up to date (after migrations, when a job finishes).

    Without them SQLite guesses that every index is equally selective and may count a filtered
    job list through the wrong one. PostgreSQL needs nothing: autovacuum analyzes as rows change.
    """
    if not url.startswith("sqlite"):
        return
    with get_engine(url).begin() as connection:
        connection.execute(text(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}"))
        connection.execute(text("ANALYZE"))
