"""Thousands of finished jobs, stored the way the training engine leaves them, in bulk.

Used by bench/api_scale.py and by the query-plan tests: each job row carries what a real run
writes (the full hyperparameters, run info, best-epoch details, held-out test metrics), with
one epoch row per epoch (per-stage gradient norms included) and its last/best/bundle
checkpoint rows. One job in `FAILED_EVERY` failed (error and traceback, no checkpoints).
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from core.specs import resolve_hyperparameters
from core.tables import Checkpoint, Dataset, EpochMetric, Job, JobStatus, utcnow
from models import STAGES

ARCHITECTURES = (
    ("plain34", {}),
    ("resnet34", {}),
    ("se_resnet34", {}),
    ("eca_resnet34", {}),
    ("preact_resnet34", {}),
    ("resnet34", {"act": "silu", "drop_path_rate": 0.1}),
)
CLASS_NAMES = ["bakso", "gado-gado", "nasi-goreng", "rendang", "sate"]
FAILED_EVERY = 25
BATCHES_PER_EPOCH = 5
VAL_SIZE, TEST_SIZE, TRAIN_SIZE = 41, 31, 131


def add_datasets(session: Session, count: int) -> list[int]:
    rows = [
        Dataset(
            name=f"snacks-{index}",
            path=f"/data/snacks-{index}",
            source="folder",
            fingerprint=f"{index:064x}",
            classes=CLASS_NAMES,
            counts={name: {"total": 40, "train": 26, "val": 8, "test": 6} for name in CLASS_NAMES},
            skipped=[],
            num_images=200,
        )
        for index in range(count)
    ]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def seed_jobs(
    session: Session,
    *,
    jobs: int,
    dataset_ids: list[int],
    bundle_path: str,
    epochs: int = 30,
    seed: int = 0,
) -> None:
    """Insert `jobs` finished jobs spread over the datasets, oldest first; flushes, no commit."""
    rng = random.Random(seed)
    warmup = min(2, epochs - 1)
    hyper = resolve_hyperparameters(
        "recommended", {"image_size": 64, "epochs": epochs, "warmup_epochs": warmup}
    ).model_dump()
    first_id = (session.scalar(select(func.max(Job.id))) or 0) + 1
    start = utcnow() - timedelta(days=300)
    job_rows, metric_rows, checkpoint_rows = [], [], []
    for offset in range(jobs):
        job_id = first_id + offset
        finished = start + timedelta(minutes=30 * offset)
        failed = offset % FAILED_EVERY == FAILED_EVERY - 1
        curve = epoch_rows(job_id, epochs, rng, finished)
        dataset_id = dataset_ids[offset % len(dataset_ids)]
        job_rows.append(job_row(job_id, dataset_id, offset, hyper, curve, finished, failed))
        metric_rows.extend(curve)
        if not failed:
            checkpoint_rows.extend(checkpoints(job_id, epochs, curve, bundle_path, finished))
    for table, rows in ((Job, job_rows), (EpochMetric, metric_rows), (Checkpoint, checkpoint_rows)):
        for start_row in range(0, len(rows), 5000):
            session.execute(insert(table), rows[start_row : start_row + 5000])
    session.flush()


def job_row(
    job_id: int,
    dataset_id: int,
    index: int,
    hyper: dict[str, Any],
    curve: list[dict[str, Any]],
    finished: Any,
    failed: bool,
) -> dict[str, Any]:
    architecture, options = ARCHITECTURES[index % len(ARCHITECTURES)]
    best = max(curve, key=lambda row: (row["val_accuracy"], -row["val_loss"]))
    epochs_run = len(curve)
    started = finished - timedelta(seconds=sum(row["epoch_seconds"] for row in curve))
    row: dict[str, Any] = {
        "id": job_id,
        "dataset_id": dataset_id,
        "status": JobStatus.failed if failed else JobStatus.succeeded,
        "architecture": architecture,
        "architecture_options": options,
        "hyperparameters": hyper | {"seed": index % 3},
        "preset": "recommended",
        "queue": "cpu",
        "group_id": f"{index // 3:08x}-0000-4000-8000-000000000000",
        "repeat_index": index % 3,
        "created_at": started - timedelta(seconds=5),
        "started_at": started,
        "finished_at": finished,
        "heartbeat_at": finished,
        "worker": "bench-host:4242",
        "attempts": 1,
        "cancel_requested": False,
        "progress_epoch": epochs_run,
        "progress_batch": BATCHES_PER_EPOCH,
        "progress_total_batches": BATCHES_PER_EPOCH,
        "progress_percent": 100.0,
        "eta_seconds": None,
        "num_parameters": 21_287_237,
        "gflops": 0.598,
        "device": "cpu",
        "run_info": {
            "class_names": CLASS_NAMES,
            "train_size": TRAIN_SIZE,
            "val_size": VAL_SIZE,
            "test_size": TEST_SIZE,
            "skipped": [{"file": "sate/broken-07.jpg", "reason": "cannot identify image file"}],
            "start_epoch": 1,
            "inference_ms": 4.1,
            "inference_device": "cpu",
            "inference_threads": 2,
        },
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "best_val_loss": best["val_loss"],
        "best_details": details(best["val_accuracy"], VAL_SIZE),
        "test_accuracy": best["val_accuracy"] - 0.02,
        "test_metrics": {
            **details(best["val_accuracy"] - 0.02, TEST_SIZE),
            "loss": best["val_loss"] + 0.05,
            "accuracy": best["val_accuracy"] - 0.02,
            "num_images": TEST_SIZE,
            "epoch": best["epoch"],
        },
        "promoted_at": None,
        "error_message": None,
        "error_traceback": None,
    }
    if failed:
        row.update(
            best_details=None,
            test_accuracy=None,
            test_metrics=None,
            error_message="RuntimeError: CUDA out of memory",
            error_traceback="Traceback (most recent call last):\n" + "  ...\n" * 40,
        )
    return row


def epoch_rows(job_id: int, epochs: int, rng: random.Random, finished: Any) -> list[dict]:
    ceiling = rng.uniform(0.55, 0.85)
    rows = []
    for epoch in range(1, epochs + 1):
        progress = 1 - math.exp(-epoch / 8)
        val_accuracy = round(ceiling * progress + rng.uniform(-0.03, 0.03), 4)
        train_accuracy = round(min(1.0, val_accuracy + 0.1 * progress), 4)
        rows.append(
            {
                "job_id": job_id,
                "epoch": epoch,
                "train_loss": 1.6 - 1.1 * progress + rng.uniform(0, 0.05),
                "train_accuracy": train_accuracy,
                "val_loss": 1.6 - 0.9 * progress + rng.uniform(0, 0.08),
                "val_accuracy": val_accuracy,
                "lr": 0.05 * 0.5 * (1 + math.cos(math.pi * epoch / epochs)),
                "epoch_seconds": rng.uniform(9, 11),
                "train_images_per_second": rng.uniform(60, 70),
                "generalization_gap": round(train_accuracy - val_accuracy, 4),
                "grad_norms": {stage: rng.uniform(0.05, 3.0) for stage in STAGES},
                "is_best": False,
                "created_at": finished - timedelta(seconds=10 * (epochs - epoch)),
            }
        )
    best = max(rows, key=lambda row: (row["val_accuracy"], -row["val_loss"]))
    best["is_best"] = True
    return rows


def details(accuracy: float, images: int) -> dict[str, Any]:
    per_class = images // len(CLASS_NAMES)
    right = round(per_class * accuracy)
    matrix = [
        [right if col == row else (per_class - right) // (len(CLASS_NAMES) - 1) for col in range(5)]
        for row in range(len(CLASS_NAMES))
    ]
    return {
        "class_names": CLASS_NAMES,
        "per_class_accuracy": {name: right / per_class for name in CLASS_NAMES},
        "confusion_matrix": matrix,
        "macro_f1": round(accuracy - 0.01, 4),
    }


def checkpoints(
    job_id: int, epochs: int, curve: list[dict[str, Any]], bundle_path: str, finished: Any
) -> list[dict[str, Any]]:
    best_epoch = next(row["epoch"] for row in curve if row["is_best"])
    folder = f"/var/foodlab/checkpoints/job-{job_id}"
    return [
        {
            "job_id": job_id,
            "kind": kind,
            "epoch": epoch,
            "path": bundle_path if kind == "bundle" else f"{folder}/{kind}.pt",
            "size_bytes": 85_312_000 if kind == "bundle" else 255_900_000,
            "sha256": f"{job_id:064x}",
            "created_at": finished,
        }
        for kind, epoch in (("last", epochs), ("best", best_epoch), ("bundle", best_epoch))
    ]
