"""`foodlab predict` against the live app (in-process transport) and against nothing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from serving_testlib import CLASSES_A, Catalog, image_bytes
from typer.testing import CliRunner

import cli.predict


@pytest.fixture
def foodlab(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """The `foodlab` command with only `predict`, talking to the test app."""
    seen: dict[str, object] = {}

    def make_client(url: str, token: str | None) -> TestClient:
        seen.update(url=url, token=token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return TestClient(client.app, headers=headers)

    monkeypatch.setattr(cli.predict, "make_client", make_client)
    app = typer.Typer()
    app.callback()(lambda: None)
    cli.predict.register(app)
    app.seen = seen  # type: ignore[attr-defined]
    return app


def photo(tmp_path: Path, name: str = "lunch.jpg") -> str:
    path = tmp_path / name
    path.write_bytes(image_bytes())
    return str(path)


@pytest.mark.slow
def test_prints_the_top_k_table(
    foodlab: typer.Typer, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = catalog.job(catalog.dataset(), accuracy=0.82)
    images = ["one.jpg", "two.jpg"]
    for name in images:
        photo(tmp_path, name)
    monkeypatch.chdir(tmp_path)  # short relative paths: the table column stays narrow
    result = CliRunner().invoke(foodlab, ["predict", *images, "--top-k", "2", "--token", "t"])
    assert result.exit_code == 0, result.output
    assert "one.jpg" in result.output and "two.jpg" in result.output
    assert sum(result.output.count(name) for name in CLASSES_A) == 4  # 2 images x top 2
    assert f"job {job.id}" in result.output and "82.0%" in result.output
    assert "float32" in result.output  # the precision that answered
    assert foodlab.seen == {"url": "http://127.0.0.1:8000", "token": "t"}  # type: ignore[attr-defined]


def test_job_id_and_json(foodlab: typer.Typer, catalog: Catalog, tmp_path: Path) -> None:
    snacks = catalog.dataset()
    catalog.job(snacks, accuracy=0.9)
    other = catalog.job(snacks, accuracy=0.1)
    result = CliRunner().invoke(
        foodlab, ["predict", photo(tmp_path), "--job-id", str(other.id), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert f'"job_id":{other.id}' in result.output


def test_missing_file_is_one_line(foodlab: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(foodlab, ["predict", str(tmp_path / "nope.jpg")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: cannot read") and "nope.jpg" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_api_error_is_one_line(foodlab: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(foodlab, ["predict", photo(tmp_path)])  # nothing trained yet
    assert result.exit_code == 1
    assert "no servable model" in result.output and "(HTTP 409)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unreachable_api_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = typer.Typer()
    app.callback()(lambda: None)
    cli.predict.register(app)
    url = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(app, ["predict", photo(tmp_path), "--url", url])
    assert result.exit_code == 1 and "cannot reach the foodlab API" in result.output
    assert "Traceback" not in result.output


def test_registered_in_the_foodlab_command() -> None:
    from cli.main import app

    names = {command.name or command.callback.__name__ for command in app.registered_commands}
    assert "predict" in names
