"""The `foodlab` console command. Each module in COMMAND_MODULES adds its own commands."""

from __future__ import annotations

import importlib

import typer

from core.settings import SettingsError

app = typer.Typer(
    name="foodlab",
    help="Train, compare and serve plain and residual CNNs on food photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each module exposes `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "cli.train",
    "cli.datasets",
    "cli.server",
    "cli.predict",
    "cli.study",
    "cli.search",
    "cli.jobs",
)

for module_name in COMMAND_MODULES:
    importlib.import_module(module_name).register(app)


def main() -> None:
    """The console entry point: a bad FOODLAB_ variable is a one-line error, not a traceback."""
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"error: invalid environment: {exc}", err=True)
        raise SystemExit(2) from None
