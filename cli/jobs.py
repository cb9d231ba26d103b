"""`foodlab job retry ID` and `foodlab job cancel ID`: act on a job through the running API."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.api_client import DEFAULT_URL, ApiCallError, make_client, request

job_app = typer.Typer(help="Act on training jobs through the API.", no_args_is_help=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="FOODLAB_URL", help="API address")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="FOODLAB_TOKEN", help="API bearer token")
]
JobArg = Annotated[int, typer.Argument(metavar="ID", help="the job's id")]


@job_app.command("retry")
def retry(job_id: JobArg, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Queue a failed or cancelled job again; it resumes from its last checkpoint."""
    job = _post(url, token, f"/jobs/{job_id}/retry")
    typer.echo(f"job {job_id} is {job['status']}; it resumes from its last checkpoint")


@job_app.command("cancel")
def cancel(job_id: JobArg, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None) -> None:
    """Cancel a job: at once if no worker holds it, else at the worker's next batch."""
    job = _post(url, token, f"/jobs/{job_id}/cancel")
    typer.echo(
        f"job {job_id} is {job['status']}"
        + (" (stops at its next batch)" if job["status"] == "running" else "")
    )


def _post(url: str, token: str | None, path: str) -> dict:
    try:
        with make_client(url, token) as client:
            return request(client, "POST", path).json()
    except ApiCallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.add_typer(job_app, name="job")
