"""Fixtures for the experiment-analysis tests: a migrated SQLite database and stored runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.db import open_session
from core.migrate import upgrade
from core.tables import Dataset


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once; each test gets a copy of the file (migrating per test is slow)."""
    path = tmp_path_factory.mktemp("template") / "foodlab.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(migrated_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "foodlab.db"
    shutil.copy(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    session = open_session(db_url)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def dataset(session: Session) -> Dataset:
    row = Dataset(
        name="dishes",
        path="/nowhere",
        source="folder",
        fingerprint="f" * 64,
        classes=["a", "b"],
        counts={"a": {"total": 10, "train": 8, "val": 2}, "b": {"total": 10, "train": 8, "val": 2}},
        num_images=20,
    )
    session.add(row)
    session.commit()
    return row
