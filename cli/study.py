"""`foodlab study`: the architecture study, from real runs on the user's own data.

Trains Plain-34, ResNet-34 and two modifications (or any registered architectures) under one
configuration, follows them with progress bars and writes report.md with its figures.
Jobs run on a foodlab service (`--url`) or in this process (`--local`, the embedded database
of FOODLAB_HOME); either way the report is computed from the stored metrics.
"""

from __future__ import annotations

import io
import shlex
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.compare import Comparison, build_comparison, load_records, rebase
from core.datasets import DatasetError
from core.report import StudyData, fmt_number, fmt_params, fmt_percent, write_report
from core.specs import PRESETS, EpochMetrics, SpecError, resolve_hyperparameters

console = Console()
errors = Console(stderr=True)

DEFAULT_ARCHS = "plain34,resnet34,se_resnet34,preact_resnet34"
DEFAULT_URL = "http://127.0.0.1:8000"
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class StudyPlan:
    architectures: list[str]
    preset: str
    overrides: dict[str, Any]  # hyperparameters set on the command line
    repeats: int


@dataclass(frozen=True)
class JobState:
    """What the progress bars show of one job."""

    status: str
    epoch: int
    total_epochs: int
    percent: float
    best_val_accuracy: float | None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")


class Backend(Protocol):
    """Where the study's jobs run: the service (`--url`) or this process (`--local`)."""

    def register_dataset(self, data: Path) -> int: ...

    def dataset(self, dataset_id: int) -> dict[str, Any]: ...

    def submit(self, dataset_id: int, architecture: str, plan: StudyPlan) -> list[int]: ...

    def start(self, job_ids: Sequence[int]) -> None: ...

    def state(self, job_id: int) -> JobState: ...

    def stop(self, job_ids: Sequence[int]) -> None: ...

    def comparison(self, job_ids: Sequence[int]) -> Comparison: ...

    def epochs(self, job_id: int) -> list[EpochMetrics]: ...


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _dataset_fields(row: Any) -> dict[str, Any]:
    """What the report shows of a dataset (the fields of DatasetPublic)."""
    names = ("id", "name", "classes", "counts", "skipped", "num_images")
    return {name: getattr(row, name) for name in names}


# --- in this process ---------------------------------------------------------------------------


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
        from core import repository as repo

        with self._session() as session:
            row = repo.get_dataset(session=session, dataset_id=dataset_id)
            return _dataset_fields(row) if row is not None else {}

    def submit(self, dataset_id: int, architecture: str, plan: StudyPlan) -> list[int]:
        """The rows POST /jobs would create: validated, seeds seed..seed+n-1, one group id."""
        import models
        from core import repository as repo
        from core.tables import Job

        options = models.validate_options(architecture, {}).model_dump(exclude_defaults=True)
        hyper = resolve_hyperparameters(plan.preset, plan.overrides)
        group_id = str(uuid.uuid4()) if plan.repeats > 1 else None
        jobs = [
            Job(
                dataset_id=dataset_id,
                architecture=architecture,
                architecture_options=options,
                hyperparameters=hyper.model_copy(update={"seed": hyper.seed + i}).model_dump(),
                preset=plan.preset,
                queue="local",
                group_id=group_id,
                repeat_index=i,
            )
            for i in range(plan.repeats)
        ]
        with self._session() as session:
            repo.add_jobs(session=session, jobs=jobs)
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
                _fail(f"job {job_id} not found in {self.settings.database}", 2)
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
                    repo.request_cancel(session=session, job=job)
        if self._thread is not None:
            self._thread.join()

    def comparison(self, job_ids: Sequence[int]) -> Comparison:
        import models

        presets = {name: info.default_options for name, info in models.ARCHITECTURES.items()}
        with self._session() as session:
            records = load_records(session=session, job_ids=job_ids, presets=presets)
        return build_comparison(records)

    def epochs(self, job_id: int) -> list[EpochMetrics]:
        from core import repository as repo

        with self._session() as session:
            return [
                EpochMetrics.model_validate(row, from_attributes=True)
                for row in repo.job_metrics(session=session, job_id=job_id)
            ]


# --- against a running service -------------------------------------------------------------------


def make_client(url: str, token: str | None) -> httpx.Client:
    """The HTTP client (tests swap in one bound to an in-process app)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=300)


class RemoteBackend:
    """POST /datasets (a zip of --data), POST /jobs, GET /jobs/{id}, GET /compare.

    The service's workers train; this side only follows and writes the report.
    """

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            _fail(f"cannot reach the foodlab API at {self.client.base_url}: {exc}")
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            _fail(f"{method} {path}: {detail} (HTTP {response.status_code})")
        return response.json()

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
        body = {
            "dataset_id": dataset_id,
            "architecture": {"name": architecture},
            "preset": plan.preset,
            "hyperparameters": plan.overrides,
            "repeats": plan.repeats,
        }
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

    def epochs(self, job_id: int) -> list[EpochMetrics]:
        rows = self._get(f"/jobs/{job_id}/metrics")["data"]
        return [EpochMetrics.model_validate(row) for row in rows]


def zip_folder(folder: Path) -> bytes:
    """The folder's files in a .zip with the class folders at its root (hidden files left out)."""
    if not folder.is_dir():
        _fail(f"--data {folder}: not a folder or .zip", 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                # Photos are already compressed; storing them keeps zipping fast.
                archive.write(path, relative.as_posix(), compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


# --- following the jobs ------------------------------------------------------------------------


def follow(backend: Backend, labels: dict[int, str], sleep: Callable[[float], None]) -> None:
    """One progress bar per job until every job has finished."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            job_id: progress.add_task(label, total=100, detail="queued")
            for job_id, label in labels.items()
        }
        pending = set(labels)
        while pending:
            for job_id in sorted(pending):
                state = backend.state(job_id)
                _update(progress, tasks[job_id], state)
                if state.finished:
                    pending.discard(job_id)
            if pending:
                sleep(POLL_SECONDS)


def _update(progress: Progress, task: TaskID, state: JobState) -> None:
    running = state.status == "running"
    detail = f"epoch {state.epoch}/{state.total_epochs}" if running else state.status
    if state.best_val_accuracy is not None:
        detail += f", best val acc {state.best_val_accuracy:.1%}"
    done = 100.0 if state.status == "succeeded" else state.percent
    progress.update(task, completed=done, detail=detail)


def summary_table(comparison: Comparison) -> Table:
    table = Table("model", "runs", "best val acc", "final val acc", "params", "s / epoch")
    for group in comparison.groups:
        s = group.stats
        table.add_row(
            group.label,
            str(len(group.job_ids)),
            fmt_percent(s["best_val_accuracy"].mean, s["best_val_accuracy"].std),
            fmt_percent(s["final_val_accuracy"].mean, s["final_val_accuracy"].std),
            fmt_params(s["num_parameters"].mean),
            fmt_number(s["mean_epoch_seconds"].mean, 1),
        )
    return table


# --- the command -------------------------------------------------------------------------------


def submit_study(backend: Backend, plan: StudyPlan, data: Path) -> dict[int, str]:
    """Register the data and create every job; returns job id -> progress-bar label."""
    try:
        dataset_id = backend.register_dataset(data)
    except DatasetError as exc:
        _fail(f"--data: {exc}", 2)
    labels = {}
    for architecture in plan.architectures:
        ids = backend.submit(dataset_id, architecture, plan)
        for index, job_id in enumerate(ids):
            labels[job_id] = f"job {job_id} {architecture}" + (f" #{index + 1}" if index else "")
    return labels


def run_study(
    backend: Backend,
    labels: dict[int, str],
    out: Path,
    command: str,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Follow the jobs to the end, compare them and write the report; returns report.md.

    The first two configurations (in job order) are the plain and the residual baseline.
    Exits with status 1, after writing the report, when a job did not succeed.
    """
    job_ids = list(labels)
    backend.start(job_ids)
    try:
        follow(backend, labels, sleep)
    except KeyboardInterrupt:
        errors.print("interrupted: stopping the study's jobs")
        backend.stop(job_ids)
        raise typer.Exit(130) from None
    comparison = backend.comparison(job_ids)
    if not any(row.epochs_run for row in comparison.rows):
        _fail("no job finished an epoch; nothing to report (see the jobs' errors)")
    baselines = [group.job_ids[0] for group in comparison.groups[:2]]
    study = StudyData(
        comparison=rebase(comparison, baselines[0]),
        epochs={job_id: backend.epochs(job_id) for job_id in job_ids},
        baselines=baselines,
        dataset=backend.dataset(comparison.rows[0].dataset_id),
        command=command,
    )
    report = write_report(study, out)
    console.print(summary_table(comparison))
    failed = [row.job_id for row in comparison.rows if row.status != "succeeded"]
    if failed:
        errors.print(f"report (partial): {report}; jobs that did not succeed: {failed}")
        raise typer.Exit(1)
    return report


def _id_list(text: str, flag: str) -> list[int]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        _fail(f"{flag}: expected comma-separated job ids, e.g. 1,2,3 (got {text!r})", 2)
    return list(dict.fromkeys(int(part) for part in parts))


def _names(text: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        _fail("--archs: give one or more architecture names, e.g. plain34,resnet34", 2)
    return names


def _check_architectures(names: Sequence[str]) -> None:
    import models

    unknown = [name for name in names if name not in models.ARCHITECTURES]
    if unknown:
        _fail(
            f"--archs: unknown architecture {', '.join(unknown)}; "
            f"allowed: {', '.join(models.ARCHITECTURES)}",
            2,
        )


def command_line(options: dict[str, object]) -> str:
    """The command as the user could retype it (the report's provenance line)."""
    parts = ["foodlab", "study"]
    for flag, value in options.items():
        if value is True:
            parts.append(flag)
        elif value not in (None, False):
            parts += [flag, str(value)]
    return shlex.join(parts)


def study(
    out: Annotated[Path, typer.Option("--out", help="folder for report.md and the figures")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="ImageFolder tree (<class>/<image>.jpg); with --url also .zip"),
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", help=f"hyperparameters to start from: {', '.join(PRESETS)}")
    ] = "reference",
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="default: the preset's")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", min=16, help="default: the preset's")
    ] = None,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, max=20, help="runs per architecture, seeds +0..N-1")
    ] = 1,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="first seed")] = None,
    archs: Annotated[
        str,
        typer.Option(
            "--archs", help="comma-separated; the first two are the plain and residual baselines"
        ),
    ] = DEFAULT_ARCHS,
    jobs: Annotated[
        str | None,
        typer.Option("--jobs", help="report on these existing job ids instead of training"),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="train in this process, in FOODLAB_HOME's database")
    ] = False,
    device: Annotated[
        str | None, typer.Option("--device", help="with --local: auto, cpu or cuda")
    ] = None,
    url: Annotated[
        str, typer.Option("--url", envvar="FOODLAB_URL", help="API address")
    ] = DEFAULT_URL,
    token: Annotated[
        str | None, typer.Option("--token", envvar="FOODLAB_TOKEN", help="API bearer token")
    ] = None,
) -> None:
    """Train Plain-34, ResNet-34 and two modifications; write report.md comparing them."""
    if jobs is not None:
        job_ids = _id_list(jobs, "--jobs")
        command = command_line({"--local": local, "--jobs": jobs, "--out": out})
    else:
        if data is None:
            _fail("--data DIR is required (or --jobs to report on existing jobs)", 2)
        plan = _plan(preset, epochs, image_size, seed, archs, repeats)
        if local:
            _check_architectures(plan.architectures)
        command = command_line(
            {
                "--local": local,
                "--data": data,
                "--preset": preset,
                "--epochs": epochs,
                "--image-size": image_size,
                "--seed": seed,
                "--repeats": repeats if repeats > 1 else None,
                "--archs": archs if archs != DEFAULT_ARCHS else None,
                "--out": out,
            }
        )
    with open_backend(local, device, url, token) as backend:
        if jobs is not None:
            labels = {job_id: f"job {job_id}" for job_id in job_ids}
        else:
            labels = submit_study(backend, plan, data)
        report = run_study(backend, labels, out, command)
    console.print(f"report: {report}")


def _plan(
    preset: str,
    epochs: int | None,
    image_size: int | None,
    seed: int | None,
    archs: str,
    repeats: int,
) -> StudyPlan:
    overrides = {"epochs": epochs, "image_size": image_size, "seed": seed}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        resolve_hyperparameters(preset, overrides)
    except SpecError as exc:
        _fail(str(exc), 2)
    return StudyPlan(_names(archs), preset, overrides, repeats)


@contextmanager
def open_backend(local: bool, device: str | None, url: str, token: str | None) -> Iterator[Backend]:
    """This process's database with --local, else the service at `url`."""
    if local:
        yield LocalBackend(device)
        return
    with make_client(url, token) as client:
        yield RemoteBackend(client)


def register(app: typer.Typer) -> None:
    app.command("study", no_args_is_help=True)(study)
