"""How the engine reports progress: a callback interface and the values it passes.

The engine knows nothing of databases, brokers or terminals; the Celery worker writes rows
from these callbacks and the CLI draws a progress bar, each by subclassing TrainingCallback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.datasets import SkippedFile
from core.specs import EpochMetrics, TestMetrics

CheckpointKind = Literal["last", "best", "bundle"]
RunStatus = Literal["completed", "cancelled", "early_stopped"]


@dataclass(frozen=True)
class RunInfo:
    """What a run is about to do; `history` holds the epochs already done when resuming."""

    class_names: list[str]
    train_size: int
    val_size: int
    skipped: list[SkippedFile]
    total_epochs: int
    start_epoch: int  # 1-based: the first epoch this call will train
    device: str
    precision: str  # what training computes in: float32, bfloat16 or float16
    num_parameters: int
    gflops: float  # forward pass of one image at the training image size
    history: list[EpochMetrics] = field(default_factory=list)
    test_size: int = 0  # held-out images, scored once after the last epoch


@dataclass(frozen=True)
class BatchProgress:
    epoch: int
    batch: int  # 1-based
    total_batches: int
    running_loss: float  # mean training loss of the epoch so far
    images_per_second: float


@dataclass(frozen=True)
class CheckpointEvent:
    kind: CheckpointKind
    path: Path
    epoch: int
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class RunResult:
    status: RunStatus
    epochs: list[EpochMetrics]  # every epoch, including those before a resume
    best_epoch: int | None
    class_names: list[str]
    skipped: list[SkippedFile]
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    bundle: Path | None
    num_parameters: int
    gflops: float
    test: TestMetrics | None = None  # the best checkpoint on the held-out test part


class TrainingCallback:
    """Override what you need; every method is a no-op by default."""

    def on_run_start(self, info: RunInfo) -> None:
        pass

    def on_batch_end(self, progress: BatchProgress) -> None:
        pass

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        pass

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        pass

    def should_stop(self) -> bool:
        """Checked between batches; True ends the run cleanly as "cancelled"."""
        return False

    def before_write(self) -> None:
        """Called before the engine writes a checkpoint or bundle; raise to stop the run
        without writing (a worker that has lost its claim on the job)."""

    def on_run_end(self, result: RunResult) -> None:
        pass


class CallbackList(TrainingCallback):
    """Fans each event out to several callbacks; stops when any of them asks to."""

    def __init__(self, callbacks: Iterable[TrainingCallback]) -> None:
        self.callbacks = list(callbacks)

    def on_run_start(self, info: RunInfo) -> None:
        for callback in self.callbacks:
            callback.on_run_start(info)

    def on_batch_end(self, progress: BatchProgress) -> None:
        for callback in self.callbacks:
            callback.on_batch_end(progress)

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(metrics)

    def on_checkpoint(self, event: CheckpointEvent) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(event)

    def should_stop(self) -> bool:
        return any(callback.should_stop() for callback in self.callbacks)

    def before_write(self) -> None:
        # Callbacks written before this hook existed need not define it.
        for callback in self.callbacks:
            if hasattr(callback, "before_write"):
                callback.before_write()

    def on_run_end(self, result: RunResult) -> None:
        for callback in self.callbacks:
            callback.on_run_end(result)
