"""A ResNet-34 job through the worker's own code path, for bench/gpu_check.sh.

    .venv/bin/python bench/gpu_worker_job.py [--epochs 2] [--image-size 224] [--per-class 100]

With the embedded defaults (SQLite, filesystem broker) in a fresh FOODLAB_HOME: the schema is
migrated with `foodlab db upgrade`, generated images are uploaded and the job submitted
through the API (`POST /datasets`, `POST /jobs`, in process), then the Celery task function
that `foodlab worker` runs (`workers.tasks.train_job`) trains it here. Prints the job as the
API answers it and its epochs; exits 1 unless it succeeded on a GPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def generated_zip(per_class: int, size: int) -> bytes:
    """Five classes of tinted JPEG noise, zipped in ImageFolder layout."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for label in range(5):
            for i in range(per_class):
                pixels = rng.integers(0, 160, (size, size, 3), dtype=np.uint8)
                pixels[..., label % 3] += 90
                image = io.BytesIO()
                Image.fromarray(pixels).save(image, "JPEG", quality=90)
                archive.writestr(f"class{label}/{i:04d}.jpg", image.getvalue())
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="foodlab-gpu-check-"))
    os.environ["FOODLAB_HOME"] = str(home)  # before anything reads the settings
    foodlab = Path(sys.executable).with_name("foodlab")
    subprocess.run([str(foodlab), "db", "upgrade"], check=True, cwd=REPO)

    from fastapi.testclient import TestClient

    from service.app import create_app
    from workers.tasks import train_job

    with TestClient(create_app()) as client:
        upload = client.post(
            "/datasets",
            files={"file": ("generated.zip", generated_zip(args.per_class, 256))},
            data={"name": "generated"},
        )
        assert upload.status_code == 201, upload.text
        body = {
            "dataset_id": upload.json()["id"],
            "architecture": {"name": "resnet34"},
            "hyperparameters": {"epochs": args.epochs, "image_size": args.image_size},
        }
        submitted = client.post("/jobs", json=body)
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]
        status = train_job(job_id)  # what the worker process runs for the task message
        job = client.get(f"/jobs/{job_id}").json()
        metrics = client.get(f"/jobs/{job_id}/metrics").json()["data"]
    keys = ("id", "status", "device", "attempts", "error")
    shown = {key: job.get(key) for key in keys} | {"best": (job.get("best") or {}).get("epoch")}
    print(json.dumps({"task_status": status, "job": shown}, indent=2, default=str))
    for row in metrics:
        print(
            f"epoch {row['epoch']}: train loss {row['train_loss']:.3f}, val accuracy "
            f"{row['val_accuracy']:.3f}, {row['train_images_per_second']:.0f} training images/s, "
            f"{row['epoch_seconds']:.1f} s"
        )
    on_gpu = str(job.get("device") or "").startswith("cuda")
    if status != "succeeded" or not on_gpu:
        print(f"gpu_worker_job: the job ended {status!r} on {job.get('device')!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
