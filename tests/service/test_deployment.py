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
GPU_WORKERS = ("worker-gpu0", "worker-gpu1")
WORKERS = (*GPU_WORKERS, "worker-cpu")
FOODLAB_SERVICES = ("migrate", "api", *WORKERS)
RUNTIME_VARIABLES = {"OMP_WAIT_POLICY"}  # read by OpenMP, not by our settings


def test_compose_has_the_whole_stack() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", *WORKERS}
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for name in FOODLAB_SERVICES:
        assert "foodlab-data:/data" in services[name]["volumes"]


def gpu_reservations(service: str) -> list[dict]:
    deploy = COMPOSE["services"][service].get("deploy", {})
    return deploy.get("resources", {}).get("reservations", {}).get("devices", [])


def test_each_gpu_worker_reserves_a_gpu_of_its_own() -> None:
    reserved = []
    for name in GPU_WORKERS:
        (device,) = gpu_reservations(name)
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert "count" not in device  # `count: 1` gives every replica GPU 0
        (gpu,) = device["device_ids"]
        reserved.append(gpu)
        # Inside its container the reserved GPU is the only one: number 0.
        assert COMPOSE["services"][name]["command"] == ["foodlab", "worker", "--gpu", "0"]
    assert len(set(reserved)) == len(reserved) == 2
    assert gpu_reservations("worker-cpu") == []
    assert "--device" in COMPOSE["services"]["worker-cpu"]["command"]


@pytest.mark.parametrize("service", WORKERS)
def test_workers_get_shared_memory_for_data_loader_processes_and_restart(service: str) -> None:
    worker = COMPOSE["services"][service]
    # Docker's default /dev/shm is 64 MB: DataLoader worker processes die once it is full.
    assert worker.get("ipc") == "host" or parse_size(worker["shm_size"]) >= 1 << 30
    assert worker["restart"] in {"unless-stopped", "always", "on-failure"}  # after exit 75
    assert worker["build"]["target"] == "worker"


def parse_size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", str(text).lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def dockerfile_stages() -> dict[str, str]:
    """The Dockerfile's build stages by name, each with the stages it builds on (without
    comments)."""
    stages: dict[str, str] = {}
    lines = (REPO / "Dockerfile").read_text().splitlines(keepends=True)
    text = "".join(line for line in lines if not line.lstrip().startswith("#"))
    for block in re.split(r"^(?=FROM )", text, flags=re.M)[1:]:
        base, name = re.match(r"FROM (\S+) AS (\S+)", block).groups()  # type: ignore[union-attr]
        stages[name] = stages.get(base, "") + block
    return stages


def test_the_api_image_carries_no_cuda_and_the_worker_image_a_compiler() -> None:
    stages = dockerfile_stages()
    for name in ("migrate", "api"):
        assert COMPOSE["services"][name]["build"]["target"] == "api"
    api = stages["api"]
    # torch comes from the CPU index before `pip install .`, which then finds it satisfied.
    cpu_torch = api.index("--index-url https://download.pytorch.org/whl/cpu torch==")
    assert cpu_torch < api.index("pip install .")
    assert "cu1" not in api and "build-essential" not in api
    worker = stages["worker"]
    assert "build-essential" in worker  # Triton and Inductor compile at run time
    assert re.search(r"ARG TORCH_INDEX=\S+", worker) and "${TORCH_INDEX} torch==" in worker


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
    # One pin for torch: what the images install is what pyproject.toml requires.
    pin = re.search(r'"torch==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin is not None
    assert set(re.findall(r"torch==(\S+)", dockerfile)) == {pin.group(1)}
