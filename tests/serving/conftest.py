"""Serving fixtures: tiny 32x32 ResNet-34 bundles, job rows pointing at them, an API client
(settings and the client factory come from tests/support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from serving_testlib import CLASSES_A, CLASSES_B, Catalog, write_bundle
from sqlalchemy.orm import Session

from core.db import open_session
from core.settings import Settings
from service.model_server import ModelServer
from tests.support import client_for

torch.set_num_threads(1)  # the machine's cores are shared; tiny models need no more


@pytest.fixture(scope="session")
def bundle_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two bundles (different class names), written once: a ResNet-34 file is ~85 MB."""
    folder = tmp_path_factory.mktemp("bundles")
    return {
        "a": write_bundle(folder / "a.pt", CLASSES_A, seed=0),
        "b": write_bundle(folder / "b.pt", CLASSES_B, seed=1),
    }


@pytest.fixture(scope="session")
def shared_server() -> ModelServer:
    # Shared across tests so each bundle is loaded once; keys are per file, so this is safe.
    return ModelServer(cache_size=8)


@pytest.fixture
def client(settings: Settings, shared_server: ModelServer) -> Iterator[TestClient]:
    with client_for(settings, shared_server) as test_client:
        yield test_client


@pytest.fixture
def own_server_client(settings: Settings) -> Iterator[TestClient]:
    """A client of an app that makes its own ModelServer from `settings`, as in production."""
    with client_for(settings, None) as test_client:
        yield test_client


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    session = open_session(settings.database)
    yield session
    session.close()


@pytest.fixture
def catalog(session: Session, bundle_files: dict[str, Path]) -> Catalog:
    return Catalog(session, bundle_files)
