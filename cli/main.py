"""The `foodlab` console command. Each module in COMMAND_MODULES adds its own commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="foodlab",
    help="Train, compare and serve plain and residual CNNs on food photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each module exposes `register(app: typer.Typer) -> None`.
COMMAND_MODULES = ("cli.train", "cli.datasets", "cli.server", "cli.predict", "cli.study")

for module_name in COMMAND_MODULES:
    importlib.import_module(module_name).register(app)
