"""The architecture study's orchestration: a plan, where its jobs run, and the report's data.

The command (`cli/study.py`) picks a backend — a running service (`cli/study_remote.py`) or
this process (`cli/study_local.py`) — and shows progress (`cli/study_progress.py`); this module
submits the jobs and gathers what the report is written from, whatever the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from analysis.compare import Comparison, build_comparison, load_records, rebase
from analysis.report import StudyData
from core import repository as repo
from core.datasets import DatasetError
from core.errors import UserError
from core.job_factory import JobRequest
from core.specs import ArchitectureSpec, EpochMetrics


class StudyError(UserError):
    """A study that cannot go on: the message names what was wrong; `exit_code` for the CLI,
    409 for the API (the jobs exist but cannot make a report yet)."""

    status_code = 409

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class StudyPlan:
    architectures: list[str]
    preset: str
    overrides: dict[str, Any]  # hyperparameters set on the command line
    repeats: int

    def request(self, dataset_id: int, architecture: str) -> JobRequest:
        """One architecture of the study as a job request (POST /jobs receives the same)."""
        return JobRequest(
            dataset_id=dataset_id,
            architecture=ArchitectureSpec(name=architecture),
            preset=self.preset,
            hyperparameters=self.overrides,
            repeats=self.repeats,
        )


@dataclass(frozen=True)
class JobState:
    """What the progress display shows of one job."""

    status: str
    epoch: int
    total_epochs: int
    percent: float
    best_val_accuracy: float | None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled", "pruned")


class Backend(Protocol):
    """Where the study's jobs run: the service (`--url`) or this process (`--local`)."""

    def register_dataset(self, data: Path) -> int: ...

    def dataset(self, dataset_id: int) -> dict[str, Any]: ...

    def submit(self, dataset_id: int, architecture: str, plan: StudyPlan) -> list[int]: ...

    def start(self, job_ids: Sequence[int]) -> None: ...

    def state(self, job_id: int) -> JobState: ...

    def stop(self, job_ids: Sequence[int]) -> None: ...

    def comparison(self, job_ids: Sequence[int]) -> Comparison: ...

    def epochs(self, job_ids: Sequence[int]) -> dict[int, list[EpochMetrics]]: ...

    def architectures(self) -> dict[str, dict[str, Any]]:
        """The registry: name -> {name, description, default_options}."""
        ...


class StoredRuns:
    """What a report is written from, read from the database in one session (the local
    backend and the API's report route). `registry` is the architecture registry as data:
    name -> {name, description, default_options, ...}."""

    def __init__(self, session: Session, registry: dict[str, dict[str, Any]]) -> None:
        self.session = session
        self.registry = registry

    def comparison(self, job_ids: Sequence[int]) -> Comparison:
        presets = {name: info["default_options"] for name, info in self.registry.items()}
        records = load_records(session=self.session, job_ids=job_ids, presets=presets)
        return build_comparison(records)

    def epochs(self, job_ids: Sequence[int]) -> dict[int, list[EpochMetrics]]:
        return repo.epochs_of_jobs(session=self.session, job_ids=job_ids)

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        """What the report shows of a dataset (the fields of DatasetPublic)."""
        row = repo.get_dataset(session=self.session, dataset_id=dataset_id)
        names = ("id", "name", "classes", "counts", "skipped", "num_images")
        return {name: getattr(row, name) for name in names} if row is not None else {}

    def architectures(self) -> dict[str, dict[str, Any]]:
        return self.registry


def submit_study(backend: Backend, plan: StudyPlan, data: Path) -> dict[int, str]:
    """Register the data and create every job; returns job id -> label for the progress display."""
    try:
        dataset_id = backend.register_dataset(data)
    except DatasetError as exc:
        raise StudyError(f"--data: {exc}", 2) from None
    labels = {}
    for architecture in plan.architectures:
        ids = backend.submit(dataset_id, architecture, plan)
        for index, job_id in enumerate(ids):
            labels[job_id] = f"job {job_id} {architecture}" + (f" #{index + 1}" if index else "")
    return labels


def gather_study(
    backend: Backend | StoredRuns, job_ids: Sequence[int], command: str | None
) -> StudyData:
    """The finished jobs' comparison and epochs, as the report needs them.

    The first two configurations (in job order) are the plain and the residual baseline.
    """
    comparison = backend.comparison(job_ids)
    if not any(row.epochs_run for row in comparison.rows):
        raise StudyError("no job finished an epoch; nothing to report (see the jobs' errors)")
    baselines = [group.job_ids[0] for group in comparison.groups[:2]]
    return StudyData(
        comparison=rebase(comparison, baselines[0]),
        epochs=backend.epochs(job_ids),
        baselines=baselines,
        dataset=backend.dataset(comparison.rows[0].dataset_id),
        command=command,
        architectures=backend.architectures(),
    )


def unsuccessful_jobs(comparison: Comparison) -> list[int]:
    return [row.job_id for row in comparison.rows if row.status != "succeeded"]
