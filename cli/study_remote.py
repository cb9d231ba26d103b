"""The study's jobs on a running foodlab service: its API creates them, its workers train."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from analysis.compare import Comparison
from analysis.study import JobState, StudyError, StudyPlan
from cli.api_client import ApiCallError, request
from core.specs import EpochMetrics

errors = Console(stderr=True)
# GET /compare/metrics answers at most this many jobs per request (the API's MAX_JOBS).
METRICS_BATCH = 50


class RemoteBackend:
    """POST /datasets (a zip of --data), POST /jobs, GET /jobs/{id}, GET /compare.

    The service's workers train; this side only follows and writes the report.
    """

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return request(self.client, method, path, **kwargs).json()
        except ApiCallError as exc:
            where = f"{method} {path}: " if exc.status is not None else ""
            raise StudyError(f"{where}{exc}") from None

    def _get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params)

    def register_dataset(self, data: Path) -> int:
        archive = data.read_bytes() if data.suffix == ".zip" else zip_folder(data)
        files = {"file": (f"{data.stem}.zip", archive, "application/zip")}
        return self._call("POST", "/datasets", files=files, data={"name": data.resolve().name})[
            "id"
        ]

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        return self._get(f"/datasets/{dataset_id}")

    def submit(self, dataset_id: int, architecture: str, plan: StudyPlan) -> list[int]:
        body = plan.request(dataset_id, architecture).model_dump(mode="json")
        first = self._call("POST", "/jobs", json=body)
        if not first["group_id"]:
            return [first["id"]]
        group = self._get("/jobs", group_id=first["group_id"], limit=500)["data"]
        return sorted(job["id"] for job in group)

    def start(self, job_ids: Sequence[int]) -> None:
        """Nothing to start: the service enqueued the jobs when it created them."""

    def state(self, job_id: int) -> JobState:
        job = self._get(f"/jobs/{job_id}")
        progress = job["progress"]
        return JobState(
            job["status"],
            progress["epoch"],
            progress["total_epochs"],
            progress["percent"],
            job["best"]["val_accuracy"],
        )

    def stop(self, job_ids: Sequence[int]) -> None:
        listed = ",".join(map(str, job_ids))
        errors.print(
            f"the jobs go on on the service: cancel them with POST /jobs/{{id}}/cancel, or "
            f"write the report later with `foodlab study --jobs {listed} --out DIR`"
        )

    def comparison(self, job_ids: Sequence[int]) -> Comparison:
        return Comparison.model_validate(self._get("/compare", jobs=",".join(map(str, job_ids))))

    def epochs(self, job_ids: Sequence[int]) -> dict[int, list[EpochMetrics]]:
        """Every epoch of every job from GET /compare/metrics: one request per 50 jobs, not
        one per job."""
        ordered = list(dict.fromkeys(job_ids))
        by_job: dict[int, list[EpochMetrics]] = {}
        for start in range(0, len(ordered), METRICS_BATCH):
            batch = ",".join(map(str, ordered[start : start + METRICS_BATCH]))
            for entry in self._get("/compare/metrics", jobs=batch):
                by_job[entry["job_id"]] = [EpochMetrics.model_validate(r) for r in entry["data"]]
        return {job_id: by_job[job_id] for job_id in job_ids}

    def architectures(self) -> dict[str, dict[str, Any]]:
        return {entry["name"]: entry for entry in self._get("/architectures")["data"]}

    def create_search(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/searches", json=body)

    def run_search(self, search_id: int) -> None:
        """Nothing to run: the service's workers train the trials."""

    def search_detail(self, search_id: int) -> dict[str, Any]:
        return self._get(f"/searches/{search_id}")


def zip_folder(folder: Path) -> bytes:
    """The folder's files in a .zip with the class folders at its root (hidden files left out)."""
    if not folder.is_dir():
        raise StudyError(f"--data {folder}: not a folder or .zip", 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                # Photos are already compressed; storing them keeps zipping fast.
                archive.write(path, relative.as_posix(), compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()
