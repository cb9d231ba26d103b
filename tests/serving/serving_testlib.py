"""Helpers of the serving tests: tiny bundles, job rows the way the engine leaves them, images."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from PIL import Image
from sqlalchemy.orm import Session

import models
from core.tables import Checkpoint, Dataset, Job, JobStatus, utcnow

CLASSES_A = ["kue-lapis", "lumpia", "roti-kukus"]
CLASSES_B = ["bakso", "cendol", "satay"]


def write_bundle(path: Path, class_names: list[str], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = models.build_model("resnet34", len(class_names))
    models.save_bundle(
        path,
        model,
        architecture={"name": "resnet34", "options": {}},
        class_names=class_names,
        preprocessing={"image_size": 32, "resize_size": 36, "mean": [0.5] * 3, "std": [0.25] * 3},
        metadata={"test": True},
    )
    return path


@dataclass
class Catalog:
    """Inserts datasets and finished jobs the way the training engine leaves them."""

    session: Session
    bundles: dict[str, Path]
    clock: int = 0

    def dataset(self, name: str = "snacks") -> Dataset:
        dataset = Dataset(name=name, path="/nowhere", source="folder", fingerprint="0" * 64)
        self.session.add(dataset)
        self.session.commit()
        return dataset

    def job(
        self,
        dataset: Dataset,
        *,
        accuracy: float | None = 0.5,
        loss: float | None = 1.0,
        bundle: str | Path | None = "a",
        status: JobStatus = JobStatus.succeeded,
        epoch: int = 3,
    ) -> Job:
        # Each job finishes one minute after the previous one: "newer" is well defined.
        self.clock += 1
        job = Job(
            dataset_id=dataset.id,
            status=status,
            architecture="resnet34",
            architecture_options={},
            best_epoch=epoch,
            best_val_accuracy=accuracy,
            best_val_loss=loss,
            finished_at=utcnow() - timedelta(hours=1) + timedelta(minutes=self.clock),
        )
        self.session.add(job)
        self.session.commit()
        if bundle is not None:
            path = self.bundles[bundle] if isinstance(bundle, str) else bundle
            self.session.add(
                Checkpoint(
                    job_id=job.id,
                    kind="bundle",
                    epoch=epoch,
                    path=str(path),
                    size_bytes=path.stat().st_size,
                    sha256="0" * 64,
                )
            )
            self.session.commit()
        return job


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (48, 40), color: int = 90) -> bytes:
    image = Image.new("RGB", size, (color, 200 - color, 60))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def upload(*names_and_data: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (name, data, "application/octet-stream")) for name, data in names_and_data]


def one_jpeg(name: str = "snack.jpg") -> list[tuple[str, tuple[str, bytes, str]]]:
    return upload((name, image_bytes()))
