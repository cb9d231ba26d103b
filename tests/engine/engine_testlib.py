"""Helpers shared by the engine tests (a unique module name: tests/ has no packages)."""

from __future__ import annotations

from core.specs import ArchitectureSpec, TrainSpec, resolve_hyperparameters
from workers.engine import TrainingCallback

TINY = {"epochs": 2, "image_size": 32, "batch_size": 8, "eval_batch_size": 16}


def tiny_spec(**overrides: object) -> TrainSpec:
    return TrainSpec(
        architecture=ArchitectureSpec(name="resnet34"),
        hyperparameters=resolve_hyperparameters("reference", TINY | overrides),
    )


class Recorder(TrainingCallback):
    """Keeps every event in order; can ask to stop at a given (epoch, batch)."""

    def __init__(self, stop_at: tuple[int, int] | None = None) -> None:
        self.events: list[tuple[str, object]] = []
        self.stop_at = stop_at
        self.position = (0, 0)

    def on_run_start(self, info):  # noqa: ANN001, ANN201 - interface types
        self.events.append(("run_start", info))

    def on_batch_end(self, progress):  # noqa: ANN001, ANN201
        self.position = (progress.epoch, progress.batch)
        self.events.append(("batch", progress))

    def on_epoch_end(self, metrics):  # noqa: ANN001, ANN201
        self.position = (metrics.epoch + 1, 0)
        self.events.append(("epoch", metrics))

    def on_checkpoint(self, event):  # noqa: ANN001, ANN201
        self.events.append(("checkpoint", event))

    def should_stop(self) -> bool:
        return self.stop_at is not None and self.position >= self.stop_at

    def on_run_end(self, result):  # noqa: ANN001, ANN201
        self.events.append(("run_end", result))

    def of(self, kind: str) -> list:
        return [value for name, value in self.events if name == kind]
