"""The schema comes from Alembic alone, forwards and backwards, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from core.migrate import downgrade, upgrade
from core.tables import Base


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def drift(url: str) -> list[object]:
    """What autogenerate would still change: the tables and the migrations must agree."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def round_trip(url: str) -> None:
    upgrade(url)
    assert table_names(url) == set(Base.metadata.tables)
    assert drift(url) == []
    downgrade(url, "base")
    assert table_names(url) == set()
    upgrade(url)
    assert table_names(url) == set(Base.metadata.tables)


def test_sqlite_round_trip(tmp_path: Path) -> None:
    round_trip(f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.integration
def test_postgres_round_trip(postgres_url: str) -> None:
    round_trip(postgres_url)
