"""Fixtures shared by every test folder: small generated datasets (never real photos), and
those of tests/support.py (settings, PostgreSQL, Redis, worker processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.dishes import write_dataset, write_dataset_zip
from tests.support import (
    _postgres_at_head,
    migrated_postgres_url,
    postgres_url,
    redis_url,
    settings,
    start_worker,
)

__all__ = [  # fixtures, for every folder
    "_postgres_at_head",
    "migrated_postgres_url",
    "postgres_url",
    "redis_url",
    "settings",
    "start_worker",
]


@pytest.fixture(scope="session")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 dishes x 8 images, 40 px: enough for a 32x32 run of a couple of epochs."""
    return write_dataset(tmp_path_factory.mktemp("synth") / "dishes", per_class=8, size=40)


@pytest.fixture(scope="session")
def synth_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset_zip(
        tmp_path_factory.mktemp("synthzip") / "dishes.zip", per_class=8, size=40
    )
