"""`foodlab study --tune` and `foodlab search --local` on a tiny dataset, trained here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from core.db import open_session
from core.settings import get_settings
from core.tables import Job, JobStatus, Search, SearchStatus

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FOODLAB_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def section(report: str, heading: str) -> str:
    return report.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_tuned_study_reports_test_accuracy_and_tuned_against_untuned(
    home: Path, synth_folder: Path, tmp_path: Path
) -> None:
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
            "16",
            "--archs",
            "plain34,resnet34",
            "--tune",
            "3",
            "--repeats",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    session = open_session(get_settings().database)
    searches = list(session.scalars(select(Search).order_by(Search.id)))
    assert [(s.architecture, s.status, s.n_trials) for s in searches] == [
        ("plain34", SearchStatus.succeeded, 3),
        ("resnet34", SearchStatus.succeeded, 3),
    ]
    jobs = list(session.scalars(select(Job).where(Job.search_id.is_(None)).order_by(Job.id)))
    assert len(jobs) == 8 and all(j.status == JobStatus.succeeded for j in jobs)  # 2 x 2 x 2
    assert all(j.test_accuracy is not None for j in jobs)
    assert {j.hyperparameters["test_fraction"] for j in jobs} == {0.15}  # the searches' split
    assert {j.hyperparameters["seed"] for j in jobs} == {0, 1}
    report = (out / "report.md").read_text()
    tuning = section(report, "Tuned against untuned")
    for search in searches:
        best = max(
            (j for j in search.trials if j.best_val_accuracy is not None),
            key=lambda j: j.best_val_accuracy,
        )
        row = next(
            line
            for line in tuning.splitlines()
            if line.startswith(f"| {search.architecture} | {search.id} (3) |")
        )
        assert f"lr={best.hyperparameters['lr']:.3g}" in row  # the search's best was trained
    assert "Highest test accuracy" in section(report, "Summary")
    assert " test acc |" in section(report, "Comparison of all models")
    session.close()


@pytest.mark.slow
def test_search_command_runs_trials_here_and_shows_the_best(home: Path, synth_folder: Path) -> None:
    result = runner.invoke(
        app,
        [
            "search",
            "--local",
            "--data",
            str(synth_folder),
            "--arch",
            "resnet34",
            "--preset",
            "reference",
            "--set",
            "epochs=1",
            "--set",
            "image_size=16",
            "--space",
            '{"lr": {"low": 0.001, "high": 0.1, "log": true}}',
            "--trials",
            "2",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best: trial" in result.output and "2/2 trials finished" in result.output
    bad = runner.invoke(
        app,
        [
            "search",
            "--local",
            "--data",
            str(synth_folder),
            "--space",
            '{"lr": {"low": 1, "high": 0.1}}',
        ],
    )
    assert bad.exit_code == 2 and "space.lr.high" in bad.output
