"""`foodlab study`: a tiny real study in-process, and a report whose tables match the database."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from experiments_testlib import add_run
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from analysis.formatting import fmt_percent
from cli.main import app
from core.db import open_session
from core.settings import get_settings
from core.tables import Dataset, Job, JobStatus
from service.deps import current_settings

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FOODLAB_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def section(report: str, heading: str) -> str:
    """The text under `## heading`, up to the next section."""
    return report.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the first table row starting with `first_cell`."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row for {first_cell!r}")


@pytest.mark.slow
def test_local_study_trains_and_reports(home: Path, synth_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "study",
            "--local",
            "--data",
            str(synth_folder),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--archs",
            "plain34,resnet34",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    session = open_session(get_settings().database)
    jobs = list(session.scalars(select(Job).order_by(Job.id)))
    assert [(j.architecture, j.status) for j in jobs] == [
        ("plain34", JobStatus.succeeded),
        ("resnet34", JobStatus.succeeded),
    ]
    every_job = section(report, "Comparison of all models")
    for job in jobs:
        assert job.hyperparameters["image_size"] == 32 and job.run_info["inference_ms"] > 0
        cells = table_row(every_job, str(job.id))
        assert cells[4] == f"{fmt_percent(job.best_val_accuracy)} ({job.best_epoch})"
    assert "## Comparison against plain34" in report and "## Comparison against resnet34" in report
    assert table_row(report, "`image_size`") == ["`image_size`", "`32`"]
    for name in re.findall(r"\]\(([^)]+\.png)\)", report):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
    session.close()


@pytest.mark.slow
def test_report_tables_match_the_database(
    home: Path, migrated_template: Path, tmp_path: Path
) -> None:
    home.mkdir()
    shutil.copy(migrated_template, home / "foodlab.db")
    session = open_session(get_settings().database)
    dataset = Dataset(
        name="dishes",
        path=str(tmp_path),
        source="folder",
        fingerprint="f",
        classes=["a", "b"],
        counts={"a": {"total": 5, "train": 4, "val": 1}},
        num_images=5,
    )
    session.add(dataset)
    session.commit()
    plain = add_run(session, dataset, "plain34", [0.2, 0.3], num_parameters=21_110_000)
    resnet = [
        add_run(
            session,
            dataset,
            "resnet34",
            accs,
            group_id="g",
            hyperparameters={"seed": seed},
            inference_ms=9.0,
        )
        for seed, accs in enumerate(([0.3, 0.5], [0.35, 0.4]))
    ]
    out = tmp_path / "report"
    ids = ",".join(str(j.id) for j in (plain, *resnet))
    result = runner.invoke(app, ["study", "--local", "--jobs", ids, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    # Per model: Plain-34's own numbers next to what the reference study reported.
    plain_section = section(report, "Results per model").split("### resnet34")[0]
    assert table_row(plain_section, "best validation accuracy")[1:] == ["30.0%", "27.1%"]
    assert table_row(plain_section, "parameters")[1:] == ["21.11M", "21.29M"]
    # All models: ResNet-34 is the mean ± std of its two seeds (best 50% and 40%).
    row = table_row(section(report, "Comparison of all models"), "resnet34")
    assert row[:5] == ["resnet34", "2", "21.00M", "1.50", "45.0 ± 7.1%"]
    # Against Plain-34: +15.0 pp, +50% for the mean of the repeats.
    versus_plain = table_row(section(report, "Comparison against plain34"), "resnet34")
    assert versus_plain[1].startswith("45.0 ± 7.1% (+15.0 pp, +50%")
    # One plain run (seed 0) against ResNet-34 seeds 0 and 1: seed noise is not controlled.
    assert "`hyperparameters.seed`" in section(report, "Fair comparison")
    session.close()


@pytest.mark.slow
def test_study_against_the_service(
    db_url: str, synth_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The --url path: upload, POST /jobs with repeats, poll, GET /compare, metrics, report.

    A stand-in worker finishes each job with stored metrics the moment it is enqueued.
    """
    from fastapi.testclient import TestClient

    import cli.study
    import service.routes.jobs
    from core import repository as repo
    from core.db import session_scope
    from core.settings import Settings
    from core.specs import EpochMetrics, JobRunInfo
    from service.app import create_app

    settings = Settings(home=tmp_path / "home", database_url=db_url)
    api = create_app()
    api.dependency_overrides[current_settings] = lambda: settings

    def finish_at_once(_: Settings, job_id: int, queue: str) -> None:
        with session_scope(db_url) as session:
            job = repo.get_job(session=session, job_id=job_id)
            accuracy = 0.2 + 0.1 * job.hyperparameters["seed"]
            for epoch in (1, 2):
                metrics = EpochMetrics(
                    epoch=epoch,
                    train_loss=1.5,
                    train_accuracy=accuracy,
                    val_loss=1.4,
                    val_accuracy=accuracy + 0.1 * epoch,
                    lr=1e-3,
                    epoch_seconds=2.0,
                    train_images_per_second=20.0,
                    generalization_gap=0.0,
                    is_best=epoch == 2,
                )
                repo.upsert_metric(session=session, job_id=job_id, metrics=metrics)
            repo.record_run_start(
                session=session,
                job_id=job_id,
                device="cpu",
                num_parameters=21_000_000,
                gflops=0.1,
                run_info=JobRunInfo(val_size=10, inference_ms=3.0),
            )
            repo.finish_job(session=session, job_id=job_id, status=JobStatus.succeeded)

    requested: list[str] = []

    class RecordingClient(TestClient):
        def request(self, method: str, url, **kwargs):  # type: ignore[no-untyped-def, override]
            requested.append(f"{method} {url}")
            return super().request(method, url, **kwargs)

    monkeypatch.setattr(service.routes.jobs, "send_training", finish_at_once)
    monkeypatch.setattr(cli.study, "make_client", lambda url, token: RecordingClient(api))
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "study",
            "--data",
            str(synth_folder),
            "--epochs",
            "2",
            "--image-size",
            "32",
            "--repeats",
            "2",
            "--archs",
            "plain34,resnet34",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    row = table_row(section(report, "Comparison of all models"), "plain34")
    # Seeds 0 and 1: best validation accuracy 40% and 50%.
    assert row[:5] == ["plain34", "2", "21.00M", "0.10", "45.0 ± 7.1%"]
    assert "## Comparison against resnet34" in report
    assert "40 images in 5 classes" in section(report, "Data")
    # The four jobs' epochs in one request, not one per job.
    assert requested.count("GET /compare/metrics") == 1
    assert not [path for path in requested if re.fullmatch(r"GET /jobs/\d+/metrics", path)]


def test_remote_epochs_take_one_request_per_50_jobs() -> None:
    import httpx

    from cli.study_remote import RemoteBackend

    asked: list[list[int]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/compare/metrics"
        ids = [int(part) for part in request.url.params["jobs"].split(",")]
        asked.append(ids)
        epoch = {
            "epoch": 1,
            "train_loss": 1.0,
            "train_accuracy": 0.5,
            "val_loss": 1.0,
            "lr": 0.1,
            "epoch_seconds": 1.0,
            "train_images_per_second": 10.0,
            "generalization_gap": 0.0,
        }
        body = [{"job_id": i, "data": [epoch | {"val_accuracy": i / 100}], "count": 1} for i in ids]
        return httpx.Response(200, json=body)

    client = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://api")
    epochs = RemoteBackend(client).epochs(list(range(60, 0, -1)))
    assert [len(ids) for ids in asked] == [50, 10]
    assert list(epochs) == list(range(60, 0, -1))
    assert epochs[7][0].val_accuracy == 0.07
