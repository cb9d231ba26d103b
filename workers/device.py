"""Which device and queues a worker uses, from the settings and what the machine has."""

from __future__ import annotations

import torch

from core.settings import Settings


def worker_device(settings: Settings) -> str:
    if settings.worker_device != "auto":
        return settings.worker_device
    return "cuda" if torch.cuda.is_available() else "cpu"


def worker_queues(settings: Settings) -> list[str]:
    """A GPU worker also takes CPU-or-anything jobs; a CPU worker never takes CUDA-only ones."""
    if settings.worker_queue:
        return [q.strip() for q in settings.worker_queue.split(",") if q.strip()]
    return ["gpu", "cpu"] if worker_device(settings) == "cuda" else ["cpu"]
