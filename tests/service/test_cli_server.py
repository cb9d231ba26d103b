"""`foodlab api/up` refuse to expose an unauthenticated API; `foodlab db upgrade` migrates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from cli.main import app, main
from cli.server import is_loopback
from core.db import get_engine
from core.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FOODLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FOODLAB_API_TOKENS", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("command", ["api", "up"])
def test_public_address_without_tokens_is_refused(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "FOODLAB_API_TOKENS" in result.output and "--allow-insecure" in result.output


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    url = get_settings().database
    tables = set(inspect(get_engine(url)).get_table_names())
    assert {"datasets", "jobs", "epoch_metrics", "checkpoints", "alembic_version"} <= tables


def test_a_bad_environment_variable_is_named_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FOODLAB_PREDICT_PRECISION", "half")
    monkeypatch.setattr("sys.argv", ["foodlab", "db", "upgrade"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "FOODLAB_PREDICT_PRECISION" in error and "'half'" in error and "'bfloat16'" in error
    assert "Traceback" not in error


def test_up_makes_openmp_wait_passively_in_the_api_and_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen: dict[str, str | None] = {}

    class FakeWorker:
        pid = 1

        def __init__(self, command: list[str]) -> None:
            seen["worker"] = os.environ.get("OMP_WAIT_POLICY")  # what the child inherits

        def terminate(self) -> None: ...

        def wait(self, timeout: float) -> None: ...

    monkeypatch.setattr("cli.server.subprocess.Popen", FakeWorker)
    monkeypatch.setattr(
        "uvicorn.run", lambda *a, **k: seen.update(api=os.environ.get("OMP_WAIT_POLICY"))
    )
    result = CliRunner().invoke(app, ["up", "--port", "1"])
    assert result.exit_code == 0, result.output
    assert seen == {"worker": "PASSIVE", "api": "PASSIVE"}

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # an explicit choice is kept
    assert CliRunner().invoke(app, ["api", "--port", "1"]).exit_code == 0
    assert seen["api"] == "ACTIVE"
