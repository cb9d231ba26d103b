"""The training engine: one model, one dataset, one output folder; no database or broker.

`train()` is the entry point; progress leaves through `TrainingCallback`s.
"""

from .callbacks import (
    BatchProgress,
    CallbackList,
    CheckpointEvent,
    RunInfo,
    RunResult,
    TrainingCallback,
)
from .run import train

__all__ = [
    "BatchProgress",
    "CallbackList",
    "CheckpointEvent",
    "RunInfo",
    "RunResult",
    "TrainingCallback",
    "train",
]
