"""`foodlab predict IMAGE...`: classify photos with the running API and print the top-k."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from cli.api_client import DEFAULT_URL, ApiCallError, make_client, request


def predict(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="JPEG, PNG or WebP files")],
    url: Annotated[
        str, typer.Option("--url", envvar="FOODLAB_URL", help="API address")
    ] = DEFAULT_URL,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="classes per image")] = 3,
    job_id: Annotated[
        int | None, typer.Option("--job-id", help="default: the serving model")
    ] = None,
    dataset_id: Annotated[
        int | None,
        typer.Option("--dataset-id", help="serving model of this dataset (default: the latest)"),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", envvar="FOODLAB_TOKEN", help="API bearer token")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON answer")] = False,
) -> None:
    """Classify food photos with the serving model (one batch) and print the top-k classes."""
    files = [_file_part(path) for path in images]
    params = {"top_k": top_k, "job_id": job_id, "dataset_id": dataset_id}
    try:
        with make_client(url, token) as client:
            response = request(
                client,
                "POST",
                "/predict",
                params={key: value for key, value in params.items() if value is not None},
                files=files,
            )
    except ApiCallError as exc:
        _fail(str(exc))
    body = response.json()
    if as_json:
        typer.echo(response.text)
        return
    Console().print(predictions_table(body, [str(path) for path in images]))


def _file_part(path: Path) -> tuple[str, tuple[str, bytes, str]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror or exc}", code=2)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return "file", (path.name, data, media_type)


def predictions_table(body: dict[str, Any], labels: list[str]) -> Table:
    """One row per (image, rank); the caption says which model answered."""
    model = body["model"]
    details = [model["architecture"]["name"], f"epoch {model['epoch']}"]
    if model.get("val_accuracy") is not None:
        details.append(f"val acc {model['val_accuracy']:.1%}")
    details.append(model["selected_by"])
    if body.get("precision"):
        details.append(body["precision"])
    caption = f"job {model['job_id']} ({', '.join(details)}), {body['latency_ms']:.0f} ms"
    table = Table(caption=caption)
    table.add_column("image", overflow="fold")
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for label, item in zip(labels, body["data"], strict=True):
        for rank, guess in enumerate(item["top_k"], start=1):
            table.add_row(
                label if rank == 1 else "",
                str(rank),
                guess["class_name"],
                f"{guess['probability']:.1%}",
            )
        table.add_section()
    return table


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
