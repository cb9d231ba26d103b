"""`foodlab search`: a hyperparameter search, on a running service (`--url`) or in this process
(`--local`), followed to its end and shown as a table of trials."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from analysis.study import StudyError
from analysis.tuning import DEFAULT_SPACE, SearchBackend
from core.errors import SpecError

console = Console()
errors = Console(stderr=True)
POLL_SECONDS = 2.0


def wait_for_searches(
    backend: SearchBackend, searches: dict[str, int], sleep: Callable[[float], None] = time.sleep
) -> dict[str, dict[str, Any]]:
    """Run (in this process) or follow (on the service) each search to its end."""
    details: dict[str, dict[str, Any]] = {}
    for search_id in searches.values():
        backend.run_search(search_id)  # --local: trains the trials now; --url: returns at once
    shown: dict[str, int] = {}
    while len(details) < len(searches):
        for label, search_id in searches.items():
            if label in details:
                continue
            detail = backend.search_detail(search_id)
            done = sum(t["state"] != "running" for t in detail["trials"])
            if shown.get(label) != done:
                console.print(
                    f"search {search_id} ({label}): {done}/{detail['n_trials']} trials finished"
                )
                shown[label] = done
            if detail["status"] != "running":
                details[label] = detail
        if len(details) < len(searches):
            sleep(POLL_SECONDS)
    return details


def trials_table(detail: dict[str, Any]) -> Table:
    best = (detail.get("best_trial") or {}).get("number")
    table = Table(title=f"search {detail['id']} ({detail['status']}): {detail['objective']}")
    for column in ("trial", "job", "state", "objective", "epochs", "test acc", "parameters"):
        table.add_column(column)
    for trial in detail["trials"]:
        value = "-" if trial["value"] is None else f"{trial['value']:.4f}"
        test = "-" if trial.get("test_accuracy") is None else f"{100 * trial['test_accuracy']:.1f}%"
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in trial["params"].items()
        )
        table.add_row(
            str(trial["number"]),
            str(trial["job_id"] or "-"),
            trial["state"],
            value,
            str(trial["epochs_run"]),
            test,
            params,
            style="bold green" if trial["number"] == best else None,
        )
    return table


def _pairs(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    from cli.train import parse_architecture_options

    try:
        return parse_architecture_options(pairs or [])
    except SpecError as exc:
        raise StudyError(f"{flag}: {exc.message}", 2) from None


def _space(text: str | None) -> dict[str, Any]:
    if text is None:
        return DEFAULT_SPACE
    try:
        space = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (OSError, ValueError) as exc:
        raise StudyError(f"--space: not JSON (or @file of JSON): {exc}", 2) from None
    if not isinstance(space, dict):
        raise StudyError("--space: expected a JSON object {name: range or [choices]}", 2)
    return space


def search(
    data: Annotated[
        Path | None, typer.Option("--data", help="ImageFolder folder (or .zip)")
    ] = None,
    dataset_id: Annotated[
        int | None, typer.Option("--dataset-id", min=1, help="a dataset the service has")
    ] = None,
    arch: Annotated[str, typer.Option("--arch")] = "resnet34",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="architecture option key=value (repeatable)"),
    ] = None,
    preset: Annotated[str, typer.Option("--preset")] = "recommended",
    fixed: Annotated[
        list[str] | None,
        typer.Option("--set", help="fixed hyperparameter key=value (repeatable), e.g. epochs=10"),
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(
            "--space",
            help='JSON (or @file): {"lr": {"low": 0.005, "high": 0.2, "log": true}, '
            '"optimizer": ["sgd", "adamw"]}; default: lr and weight_decay',
        ),
    ] = None,
    trials: Annotated[int, typer.Option("--trials", min=1)] = 10,
    parallel: Annotated[int, typer.Option("--parallel", min=1)] = 2,
    objective: Annotated[
        str, typer.Option("--objective", help="val_accuracy or val_loss")
    ] = "val_accuracy",
    pruner: Annotated[
        str, typer.Option("--pruner", help="none, median, successive_halving, hyperband")
    ] = "median",
    sampler: Annotated[str, typer.Option("--sampler", help="tpe, random, grid")] = "tpe",
    seed: Annotated[int | None, typer.Option("--seed", min=0)] = None,
    local: Annotated[
        bool, typer.Option("--local", help="train the trials in this process")
    ] = False,
    device: Annotated[str | None, typer.Option("--device", help="with --local")] = None,
    url: Annotated[str, typer.Option("--url", envvar="FOODLAB_URL")] = "http://127.0.0.1:8000",
    token: Annotated[str | None, typer.Option("--token", envvar="FOODLAB_TOKEN")] = None,
) -> None:
    """Search hyperparameters with Optuna; every trial is a foodlab job."""
    from cli.study import _fail, open_backend

    if (data is None) == (dataset_id is None):
        _fail("give --data DIR or --dataset-id N (one of them)", 2)
    try:
        with open_backend(local, device, url, token) as backend:
            if dataset_id is None:
                assert data is not None  # one of the two, checked above
                dataset_id = backend.register_dataset(data)
            body = {
                "dataset_id": dataset_id,
                "architecture": {"name": arch, "options": _pairs(option, "--option")},
                "preset": preset,
                "hyperparameters": _pairs(fixed, "--set"),
                "space": _space(space),
                "n_trials": trials,
                "max_parallel": parallel,
                "objective": objective,
                "pruner": pruner,
                "sampler": sampler,
                "seed": seed,
            }
            search_id = backend.create_search(body)["id"]
            console.print(f"search {search_id}: {trials} trials of {arch}")
            detail = wait_for_searches(backend, {arch: search_id})[arch]
    except StudyError as exc:
        _fail(str(exc), exc.exit_code)
    console.print(trials_table(detail))
    best = detail.get("best_trial")
    if best is None:
        _fail(f"search {search_id}: no trial completed")
    console.print(f"best: trial {best['number']} (job {best['job_id']}), {best['params']}")


def register(app: typer.Typer) -> None:
    app.command("search", no_args_is_help=True)(search)
