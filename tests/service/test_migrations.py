"""The schema comes from Alembic alone, forwards and backwards, on both databases."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from core.migrate import alembic_config, downgrade, upgrade
from core.search import optuna_storage
from core.tables import Base


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def foodlab_tables_only(name: str | None, type_: str, *_: object) -> bool:
    """Compare foodlab's own tables: another library's (Optuna's, whatever it adds one day)
    are not foodlab's schema to migrate."""
    return type_ != "table" or name in Base.metadata.tables


def drift(url: str) -> list[object]:
    """What autogenerate would still change: the tables and the migrations must agree."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"include_name": foodlab_tables_only}
            )
            return compare_metadata(context, Base.metadata)
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


def optuna_beside_foodlab(url: str) -> None:
    """Optuna's storage on foodlab's database URL never touches foodlab's schema or version."""
    upgrade(url)
    storage = optuna_storage(url)
    optuna.create_study(study_name="s", storage=storage).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2
    )
    assert table_names(url) == set(Base.metadata.tables)  # none of Optuna's in foodlab's schema
    assert drift(url) == []
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head()
    finally:
        engine.dispose()
    upgrade(url)  # foodlab's migrations still run with Optuna's tables in place
    assert len(optuna.load_study(study_name="s", storage=optuna_storage(url)).trials) == 2
    optuna_storage.cache_clear()


def head() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_optuna_stays_out_of_foodlab_migrations_on_sqlite(tmp_path: Path) -> None:
    optuna_beside_foodlab(f"sqlite:///{tmp_path / 'x.db'}")


@pytest.mark.integration
def test_optuna_stays_out_of_foodlab_migrations_on_postgres(postgres_url: str) -> None:
    optuna_beside_foodlab(postgres_url)
