"""Helpers for the experiment-analysis tests: stored runs inserted as rows, no training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from core.specs import REFERENCE
from core.tables import Dataset, EpochMetric, Job, JobStatus
from models import STAGES


def add_run(
    session: Session,
    dataset: Dataset,
    architecture: str,
    val_accuracies: Sequence[float],
    *,
    hyperparameters: dict[str, Any] | None = None,
    group_id: str | None = None,
    options: dict[str, Any] | None = None,
    status: JobStatus = JobStatus.succeeded,
    num_parameters: int = 21_000_000,
    inference_ms: float | None = 12.5,
    val_size: int = 40,
) -> Job:
    """A finished job with one metric row per entry of `val_accuracies` (other values derived)."""
    hyper = REFERENCE.model_dump() | {"image_size": 32, "epochs": len(val_accuracies)}
    hyper |= hyperparameters or {}
    run_info: dict[str, Any] = {"val_size": val_size, "train_size": 160}
    if inference_ms is not None:
        run_info["inference_ms"] = inference_ms
    job = Job(
        dataset_id=dataset.id,
        architecture=architecture,
        architecture_options=options or {},
        hyperparameters=hyper,
        status=status,
        group_id=group_id,
        num_parameters=num_parameters,
        gflops=1.5,
        device="cpu",
        run_info=run_info,
    )
    session.add(job)
    session.flush()
    best = max(range(len(val_accuracies)), key=lambda i: val_accuracies[i])
    for index, accuracy in enumerate(val_accuracies):
        session.add(
            EpochMetric(
                job_id=job.id,
                epoch=index + 1,
                train_loss=2.0 - 0.1 * index,
                train_accuracy=accuracy + 0.05,
                val_loss=1.9 - 0.05 * index,
                val_accuracy=accuracy,
                lr=1e-3,
                epoch_seconds=10.0 + index,
                train_images_per_second=16.0,
                generalization_gap=0.05,
                is_best=index == best,
                grad_norms={
                    stage: 0.1 * (position + 1) * (index + 1)
                    for position, stage in enumerate(STAGES)
                },
            )
        )
    if val_accuracies:
        job.best_epoch, job.best_val_accuracy = best + 1, val_accuracies[best]
    session.commit()
    return job
