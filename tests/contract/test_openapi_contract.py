"""Schemathesis against a live API process: every check (server errors, undocumented statuses
and content types, response schemas, Allow headers, auth, ...) over every phase, the stateful
one included, with a bounded number of examples so the run stays near a minute."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.migrate import upgrade
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
TOKEN = "contract-token"
MAX_EXAMPLES = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_api(tmp_path: Path, synth_zip: Path) -> Iterator[str]:
    """A real `uvicorn` process on the embedded defaults, holding one dataset and one job."""
    home = tmp_path / "home"
    upgrade(Settings(home=home).database)
    port = free_port()
    env = dict(
        os.environ,
        FOODLAB_HOME=str(home),
        FOODLAB_API_TOKENS=TOKEN,
        FOODLAB_MAX_UPLOAD_BYTES=str(2 * 1024 * 1024),
        OMP_NUM_THREADS="1",
    )
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "service.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, process)
        seed(url, synth_zip)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the API process exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the API did not answer within {timeout}s")


def seed(url: str, synth_zip: Path) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    dataset = httpx.post(
        f"{url}/datasets",
        headers=headers,
        timeout=60,
        files={"file": ("dishes.zip", synth_zip.read_bytes())},
    )
    assert dataset.status_code == 201, dataset.text
    job = httpx.post(
        f"{url}/jobs",
        headers=headers,
        timeout=30,
        json={
            "dataset_id": dataset.json()["id"],
            "architecture": {"name": "resnet34"},
            "hyperparameters": {"epochs": 1, "image_size": 32},
        },
    )
    assert job.status_code == 201, job.text
    # Warm, as a deployed API is: the first listing counts every network's FLOPs (seconds on
    # a loaded machine), later ones are cached; the fuzzer's time limit is per response.
    assert httpx.get(f"{url}/architectures", timeout=120).status_code == 200


@pytest.mark.integration
def test_the_api_keeps_its_openapi_contract(live_api: str, tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{live_api}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "20261201",
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--warnings",
        "off",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    report = result.stdout[-12_000:] + result.stderr[-3_000:]
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout or " passed" in result.stdout, report
