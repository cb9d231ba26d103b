"""The service tests' client; settings, databases and workers come from tests/support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.support import client_for


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with client_for(settings) as test_client:
        yield test_client
