"""The study's jobs in this process: rows in FOODLAB_HOME's database, trained one by one."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from analysis.compare import Comparison
from analysis.study import JobState, StoredRuns, StudyError, StudyPlan
from core.specs import EpochMetrics


class LocalBackend:
    """Rows in FOODLAB_HOME's database; jobs trained one after another in a background thread
    (the main thread draws progress and handles Ctrl-C). Imports torch only when used."""

    def __init__(self, device: str | None) -> None:
        from core.migrate import upgrade
        from core.settings import get_settings

        self.settings = get_settings()
        self.device = device
        upgrade(self.settings.database)
        self._thread: threading.Thread | None = None
        self.crashes: dict[int, str] = {}

    def _session(self) -> Any:
        from core.db import session_scope

        return session_scope(self.settings.database)

    def register_dataset(self, data: Path) -> int:
        from core.dataset_registry import register_folder

        root = data.resolve()
        with self._session() as session:
            row = register_folder(
                session=session, settings=self.settings, root=root, name=root.name, source="folder"
            )
            return row.id

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        with self._session() as session:
            return self._stored(session).dataset(dataset_id)

    def submit(self, dataset_id: int, architecture: str, plan: StudyPlan) -> list[int]:
        """The rows POST /jobs would create, made by the same factory."""
        import models
        from core.job_factory import create_jobs

        with self._session() as session:
            jobs = create_jobs(
                session=session,
                request=plan.request(dataset_id, architecture),
                canonical_options=models.canonical_options,
                queue="local",
                weights_root=self.settings.weights_root,
            )
            return [job.id for job in jobs]

    def start(self, job_ids: Sequence[int]) -> None:
        self._thread = threading.Thread(
            target=self._run_all, args=(list(job_ids),), name="study-jobs", daemon=True
        )
        self._thread.start()

    def _run_all(self, job_ids: list[int]) -> None:
        from workers.jobs import run_job

        for job_id in job_ids:
            try:
                run_job(self.settings, job_id, self.device)  # finished jobs are left alone
            except Exception as exc:  # noqa: BLE001 - shown in the summary; the study goes on
                self.crashes[job_id] = f"{type(exc).__name__}: {exc}"

    def state(self, job_id: int) -> JobState:
        from core import repository as repo

        with self._session() as session:
            job = repo.get_job(session=session, job_id=job_id)
            if job is None:
                raise StudyError(f"job {job_id} not found in {self.settings.database}", 2)
            status = "failed" if job_id in self.crashes else job.status.value
            return JobState(
                status,
                job.progress_epoch,
                int(job.hyperparameters.get("epochs", 0)),
                job.progress_percent,
                job.best_val_accuracy,
            )

    def stop(self, job_ids: Sequence[int]) -> None:
        """Cancel what has not finished: queued jobs at once, the running one at its next batch."""
        from core import repository as repo

        with self._session() as session:
            for job_id in job_ids:
                job = repo.get_job(session=session, job_id=job_id)
                if job is not None and not job.status.finished:
                    repo.request_cancel(
                        session=session, job=job, stale_after=self.settings.stale_after_seconds
                    )
        if self._thread is not None:
            self._thread.join()

    def comparison(self, job_ids: Sequence[int]) -> Comparison:
        with self._session() as session:
            return self._stored(session).comparison(job_ids)

    def epochs(self, job_ids: Sequence[int]) -> dict[int, list[EpochMetrics]]:
        with self._session() as session:
            return self._stored(session).epochs(job_ids)

    def architectures(self) -> dict[str, dict[str, Any]]:
        import models

        return {name: asdict(info) for name, info in models.ARCHITECTURES.items()}

    def _stored(self, session: Any) -> StoredRuns:
        return StoredRuns(session, self.architectures())

    # --- searches (`foodlab search --local`, `foodlab study --local --tune N`) ---------------

    def create_search(self, body: dict[str, Any]) -> dict[str, Any]:
        """The search POST /searches would create; its trials wait for `run_search`."""
        import models
        from core import search as searches
        from core.errors import UserError, from_validation_error
        from core.search_spec import SearchRequest

        try:
            request = SearchRequest.model_validate(body)
            with self._session() as session:
                search = searches.create_search(
                    session=session,
                    database_url=self.settings.database,
                    request=request,
                    canonical_options=models.canonical_options,
                    queue="local",
                )
                search_id = search.id
        except ValidationError as exc:
            raise StudyError(str(from_validation_error(exc)), 2) from None
        except UserError as exc:
            raise StudyError(str(exc), 2) from None
        searches.fill_search(
            unit_of_work=self._session,
            database_url=self.settings.database,
            search_id=search_id,
            canonical_options=models.canonical_options,
            send=None,
        )
        return {"id": search_id}

    def run_search(self, search_id: int) -> None:
        """Train the search's trials here, one after another, until it has none left."""
        from sqlalchemy import select

        from core.tables import Job, JobStatus
        from workers.jobs import run_job

        while True:
            with self._session() as session:
                queued = list(
                    session.scalars(
                        select(Job.id)
                        .where(Job.search_id == search_id, Job.status == JobStatus.queued)
                        .order_by(Job.id)
                    )
                )
            if not queued:
                return
            for job_id in queued:
                run_job(self.settings, job_id, self.device)

    def search_detail(self, search_id: int) -> dict[str, Any]:
        from core import search as searches
        from core.tables import Search

        with self._session() as session:
            search = session.get(Search, search_id)
            if search is None:
                raise StudyError(f"search {search_id} not found in {self.settings.database}", 2)
            summary = searches.search_summary(
                session=session, database_url=self.settings.database, search=search
            )
            return {
                "id": search.id,
                "status": search.status.value,
                "study_name": search.study_name,
                "n_trials": search.n_trials,
                "architecture": {"name": search.architecture},
                "objective": search.objective,
                "hyperparameters": search.hyperparameters,
                **summary,
            }
