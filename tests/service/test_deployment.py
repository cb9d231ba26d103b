"""docker-compose.yml cannot run here (no Docker engine): check what can be checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
FOODLAB_SERVICES = ("migrate", "api", "worker")
RUNTIME_VARIABLES = {"OMP_WAIT_POLICY"}  # read by OpenMP, not by our settings


def test_compose_has_the_whole_stack() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in FOODLAB_SERVICES:
        assert "foodlab-data:/data" in services[name]["volumes"]


@pytest.mark.parametrize("service", FOODLAB_SERVICES)
def test_every_variable_is_a_real_setting(service: str) -> None:
    environment = COMPOSE["services"][service]["environment"]
    for key in set(environment) - RUNTIME_VARIABLES:
        assert key.startswith("FOODLAB_"), key
        assert key.removeprefix("FOODLAB_").lower() in Settings.model_fields, key


def test_compose_urls_point_at_compose_services() -> None:
    environment = COMPOSE["services"]["api"]["environment"]
    settings = Settings(
        home=Path("/data"),
        database_url=environment["FOODLAB_DATABASE_URL"],
        broker_url=environment["FOODLAB_BROKER_URL"],
    )
    postgres = COMPOSE["services"]["postgres"]["environment"]
    assert settings.database == (
        f"postgresql+psycopg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert settings.broker.startswith("redis://redis:6379")


@pytest.mark.parametrize("service", FOODLAB_SERVICES)
def test_commands_exist(service: str) -> None:
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "foodlab"
    words = [word for word in command[1:] if not word.startswith("-")][:2]
    result = CliRunner().invoke(app, [*words[: 2 if words[0] == "db" else 1], "--help"])
    assert result.exit_code == 0, result.output


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()} - {"bench", "tests"}
    assert {"core", "analysis", "demo", "models", "workers", "service", "cli"} <= packages
    for package in sorted(packages):
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package
