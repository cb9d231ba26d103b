"""`foodlab api`, `foodlab worker`, `foodlab up` and `foodlab db upgrade`."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import typer

from core.migrate import upgrade
from core.settings import get_settings

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)

HostOpt = typer.Option("127.0.0.1", "--host", help="address to listen on")
PortOpt = typer.Option(8000, "--port", help="port to listen on")
InsecureOpt = typer.Option(
    False, "--allow-insecure", help="listen on a non-loopback address without API tokens"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, allow_insecure: bool) -> None:
    """Refuse to serve other machines with no authentication unless told to."""
    settings = get_settings()
    if is_loopback(host) or settings.tokens or allow_insecure or settings.allow_insecure:
        return
    typer.echo(
        f"error: refusing to listen on {host} without API tokens; set FOODLAB_API_TOKENS "
        "or pass --allow-insecure (FOODLAB_ALLOW_INSECURE=1)",
        err=True,
    )
    raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    url = get_settings().database
    upgrade(url, revision)
    typer.echo(f"database at {_redact(url)} is at {revision}")


def prefer_passive_openmp() -> None:
    """OpenMP threads that sleep between parallel regions instead of spinning.

    Beside another CPU-heavy process (the API and a worker on one machine), spinning made
    forward passes up to 10x slower (docs/serving.md). libgomp reads the variable once, when
    torch loads, so this runs before anything imports torch; an explicit setting wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def api(host: str = HostOpt, port: int = PortOpt, allow_insecure: bool = InsecureOpt) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    prefer_passive_openmp()
    check_exposure(host, allow_insecure)
    upgrade(get_settings().database)
    uvicorn.run("service.app:app", host=host, port=port, log_level="info")


def worker_command(queues: str | None, device: str | None) -> list[str]:
    settings = get_settings()
    from workers.device import worker_queues

    selected = queues or ",".join(worker_queues(settings))
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.tasks",
        "worker",
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--prefetch-multiplier",
        "1",
        "-Q",
        selected,
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def worker(
    queues: str = typer.Option(None, "--queues", "-Q", help="comma-separated: gpu,cpu"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N"),
    gpu: int = typer.Option(
        None, "--gpu", min=0, help="train on GPU N only (nvidia-smi's index): --device cuda:N"
    ),
) -> None:
    """Run one Celery worker process (one job at a time); one per GPU, with --gpu N."""
    if gpu is not None and device is not None:
        typer.echo("error: give --gpu or --device, not both", err=True)
        raise typer.Exit(2)
    if gpu is not None:
        device = f"cuda:{gpu}"
    if device:
        os.environ["FOODLAB_WORKER_DEVICE"] = device
        get_settings.cache_clear()  # read again, and validated, with this device
    command = worker_command(queues, device)
    os.execv(command[0], command)


def up(host: str = HostOpt, port: int = PortOpt, allow_insecure: bool = InsecureOpt) -> None:
    """Migrate, start one worker in the background and the API in the foreground."""
    check_exposure(host, allow_insecure)
    settings = get_settings()
    upgrade(settings.database)
    prefer_passive_openmp()  # the worker inherits it: both share this machine's cores
    worker_process = subprocess.Popen(worker_command(None, None))
    typer.echo(
        f"foodlab is up: API http://{host}:{port} (docs: http://{host}:{port}/docs), "
        f"one worker (pid {worker_process.pid}), data in {settings.home}. Ctrl-C stops both."
    )
    try:
        api(host=host, port=port, allow_insecure=allow_insecure)
    finally:
        worker_process.terminate()
        worker_process.wait(timeout=30)


def _redact(url: str) -> str:
    head, sep, tail = url.partition("@")
    return f"{head.split('//')[0]}//***@{tail}" if sep else url


def register(app: typer.Typer) -> None:
    app.command()(api)
    app.command()(worker)
    app.command()(up)
    app.add_typer(db_app, name="db")
