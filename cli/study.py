"""`foodlab study`: the architecture study, from real runs on the user's own data.

Trains Plain-34, ResNet-34 and two modifications (or any registered architectures) under one
configuration, follows them with progress bars and writes report.md with its figures.
Jobs run on a foodlab service (`--url`, `cli/study_remote.py`) or in this process (`--local`,
the embedded database of FOODLAB_HOME, `cli/study_local.py`); either way the report is
computed from the stored metrics (`analysis.study`, `analysis.report`).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from analysis.i18n import LANGUAGES
from analysis.study import (
    Backend,
    StudyError,
    StudyPlan,
    gather_study,
    submit_study,
    unsuccessful_jobs,
)
from analysis.tuning import TUNED_TITLE, SearchBackend, job_labels, tune, tuning_rows
from analysis.writer import FORMATS, TEMPLATES, ReportStyle, write_report
from cli.api_client import DEFAULT_URL, make_client
from cli.study_local import LocalBackend
from cli.study_progress import follow, summary_table
from cli.study_remote import RemoteBackend
from core.errors import UserError
from core.specs import PRESETS, SpecError, resolve_hyperparameters

console = Console()
errors = Console(stderr=True)

DEFAULT_ARCHS = "plain34,resnet34,se_resnet34,preact_resnet34"


def _fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def run_study(
    backend: Backend,
    labels: dict[int, str],
    out: Path,
    command: str,
    style: ReportStyle,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Follow the jobs to the end, compare them and write the report; returns report.md.

    Exits with status 1, after writing the report, when a job did not succeed.
    """
    job_ids = list(labels)
    backend.start(job_ids)
    try:
        follow(backend, labels, sleep, console)
    except KeyboardInterrupt:
        errors.print("interrupted: stopping the study's jobs")
        backend.stop(job_ids)
        raise typer.Exit(130) from None
    study = gather_study(backend, job_ids, command)
    report = write_report(study, out, style)
    console.print(summary_table(study.comparison))
    failed = unsuccessful_jobs(study.comparison)
    if failed:
        errors.print(f"report (partial): {report}; jobs that did not succeed: {failed}")
        raise typer.Exit(1)
    return report


def run_tuned_study(
    backend: SearchBackend,
    plan: StudyPlan,
    data: Path,
    n_trials: int,
    out: Path,
    command: str,
    style: ReportStyle,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """`--tune N`: a search per architecture, then its best and its untuned preset trained
    with the study's seeds; the report compares the tuned runs and shows tuned vs untuned."""
    from cli.search import wait_for_searches

    tuned = tune(backend, plan, data, n_trials, lambda ids: wait_for_searches(backend, ids, sleep))
    labels = job_labels(tuned)
    backend.start(list(labels))
    try:
        follow(backend, labels, sleep, console)
    except KeyboardInterrupt:
        errors.print("interrupted: stopping the study's jobs")
        backend.stop(list(labels))
        raise typer.Exit(130) from None
    tuned_ids = [job_id for entry in tuned for job_id in entry.tuned_ids]
    study_data = gather_study(backend, tuned_ids, command)
    untuned = backend.comparison([job_id for entry in tuned for job_id in entry.untuned_ids])
    rows = tuning_rows(tuned, study_data.comparison, untuned)
    report = write_report(replace(study_data, tuning=rows, title=TUNED_TITLE), out, style)
    console.print(summary_table(study_data.comparison))
    failed = unsuccessful_jobs(study_data.comparison) + unsuccessful_jobs(untuned)
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
    tune: Annotated[
        int | None,
        typer.Option(
            "--tune",
            min=1,
            help="a search of N trials per architecture first; then "
            "each one's best and its untuned preset are trained with --repeats seeds",
        ),
    ] = None,
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
    lang: Annotated[
        str, typer.Option("--lang", help=f"report language: {', '.join(LANGUAGES)}")
    ] = "en",
    template: Annotated[
        str,
        typer.Option(
            "--template", help=f"report layout: {', '.join(TEMPLATES)} (the course's sections)"
        ),
    ] = "study",
    report_format: Annotated[
        str, typer.Option("--format", help=f"{' or '.join(FORMATS)} (pdf: report.md as well)")
    ] = "md",
) -> None:
    """Train Plain-34, ResNet-34 and two modifications; write report.md comparing them."""
    style = _style(lang, template, report_format)
    report_flags = {
        "--lang": lang if lang != "en" else None,
        "--template": template if template != "study" else None,
        "--format": report_format if report_format != "md" else None,
    }
    if jobs is not None:
        job_ids = _id_list(jobs, "--jobs")
        command = command_line({"--local": local, "--jobs": jobs, **report_flags, "--out": out})
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
                "--tune": tune,
                "--archs": archs if archs != DEFAULT_ARCHS else None,
                **report_flags,
                "--out": out,
            }
        )
    try:
        with open_backend(local, device, url, token) as backend:
            if jobs is not None:
                report = run_study(
                    backend, {job_id: f"job {job_id}" for job_id in job_ids}, out, command, style
                )
            elif tune is not None:
                assert data is not None  # checked above: a study without --jobs needs --data
                report = run_tuned_study(backend, plan, data, tune, out, command, style)
            else:
                assert data is not None
                report = run_study(backend, submit_study(backend, plan, data), out, command, style)
    except StudyError as exc:
        _fail(str(exc), exc.exit_code)
    console.print(f"report: {report}")


def _style(lang: str, template: str, report_format: str) -> ReportStyle:
    """The report's style, checked before anything trains (a typo must not cost a study)."""
    formats = ("md",) if report_format == "md" else ("md", report_format)
    try:
        return ReportStyle(lang, template, formats).check()
    except UserError as exc:
        _fail(f"--{exc.field}: {str(exc).split(': ', 1)[-1]}", 2)


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
def open_backend(
    local: bool, device: str | None, url: str, token: str | None
) -> Iterator[SearchBackend]:
    """This process's database with --local, else the service at `url`."""
    if local:
        yield LocalBackend(device)
        return
    with make_client(url, token) as client:
        yield RemoteBackend(client)


def register(app: typer.Typer) -> None:
    app.command("study", no_args_is_help=True)(study)
