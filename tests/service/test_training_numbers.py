"""What training numbers do to the stored job, on PostgreSQL: non-finite floats never reach a
JSON column, and a diverged run ends `failed` with a message saying what to change."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from torch import nn

from core import repository as repo
from core.db import session_scope
from core.settings import Settings
from core.specs import EpochMetrics, JobRunInfo
from core.tables import Dataset, EpochMetric, Job, JobStatus
from demo.dishes import write_dataset
from tests.support import make_settings


@pytest.fixture
def on_postgres(tmp_path: Path, migrated_postgres_url: str) -> Settings:
    return make_settings(tmp_path / "home", database_url=migrated_postgres_url)


def _job(settings: Settings, data: Path, hyperparameters: dict) -> int:
    with session_scope(settings.database) as session:
        dataset = repo.add_dataset(
            session=session,
            dataset=Dataset(name="d", path=str(data), source="folder", fingerprint="f"),
        )
        job = Job(dataset_id=dataset.id, architecture="resnet34", hyperparameters=hyperparameters)
        repo.add_jobs(session=session, jobs=[job])
        return job.id


def test_non_finite_floats_never_reach_a_json_column(on_postgres: Settings, tmp_path: Path):
    job_id = _job(on_postgres, tmp_path, {"epochs": 1})
    metrics = EpochMetrics(
        epoch=1,
        train_loss=1.0,
        train_accuracy=0.5,
        val_loss=1.1,
        val_accuracy=0.5,
        lr=0.1,
        epoch_seconds=1.0,
        train_images_per_second=10.0,
        generalization_gap=0.0,
        grad_norms={"stem": 0.5, "stage1": math.nan, "stage2": math.inf},
        skipped_steps=2,
    )
    with session_scope(on_postgres.database) as session:
        repo.upsert_metric(session=session, job_id=job_id, metrics=metrics)
        repo.record_run_start(
            session=session,
            job_id=job_id,
            device="cpu",
            num_parameters=1,
            gflops=1.0,
            run_info=JobRunInfo(start_epoch=1, series=[1.0, math.nan]),
        )
        repo.record_inference_latency(
            session=session, job_id=job_id, inference_ms=math.inf, device="cpu", threads=1
        )
    with session_scope(on_postgres.database) as session:
        row = session.query(EpochMetric).filter_by(job_id=job_id).one()
        assert row.grad_norms == {"stem": 0.5} and row.skipped_steps == 2
        job = repo.get_job(session=session, job_id=job_id)
        assert job is not None and "inference_ms" not in job.run_info
        assert job.run_info["series"] == [1.0, None] and job.run_info["start_epoch"] == 1


@pytest.mark.slow
def test_a_diverged_run_fails_with_what_to_change(
    on_postgres: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from workers.jobs import run_job

    real_loss = nn.CrossEntropyLoss

    class LossGoingNan(real_loss):
        def forward(self, logits, targets):  # noqa: ANN001, ANN201
            return super().forward(logits, targets) * math.nan

    monkeypatch.setattr("workers.engine.run.nn.CrossEntropyLoss", LossGoingNan)
    data = write_dataset(tmp_path / "data", 6, 40, dishes=("bakso", "sate"))
    job_id = _job(on_postgres, data, {"epochs": 2, "image_size": 16, "batch_size": 4})
    assert run_job(on_postgres, job_id, device="cpu") == JobStatus.failed
    with session_scope(on_postgres.database) as session:
        job = repo.get_job(session=session, job_id=job_id)
        assert job is not None and job.error_traceback is None  # the user's to fix
        assert job.error_message == (
            "hyperparameters.lr: training diverged at epoch 1, "
            "batch 1 (loss nan): lower the learning rate"
        )
        assert repo.job_metrics(session=session, job_id=job_id) == []
