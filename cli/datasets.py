"""`foodlab dataset synth` (draw the demo dataset) and `foodlab dataset info` (classes, split)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.archives import resolve_dataset
from core.datasets import DatasetError, load_or_create_split, scan_dataset
from core.settings import get_settings
from core.specs import Hyperparameters
from demo.dishes import DISHES, write_dataset, write_dataset_zip

dataset_app = typer.Typer(help="Create and inspect image datasets.", no_args_is_help=True)
console = Console()


@dataset_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="folder to write (or .zip with --zip)")],
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="images per dish")] = 40,
    size: Annotated[int, typer.Option("--size", min=16, max=1024, help="side in pixels")] = 128,
    seed: Annotated[int, typer.Option("--seed", min=0, help="same seed, same images")] = 0,
    as_zip: Annotated[
        bool, typer.Option("--zip", help="write one .zip instead of a folder")
    ] = False,
) -> None:
    """Draw the demo dataset: 5 Indonesian dishes in ImageFolder layout, as JPEGs."""
    if as_zip:
        target = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
        write_dataset_zip(target, per_class, size, seed)
    else:
        target = write_dataset(out, per_class, size, seed)
    console.print(f"wrote {per_class * len(DISHES)} images of {', '.join(DISHES)} to {target}")


@dataset_app.command("info")
def info(
    data: Annotated[Path, typer.Argument(help="ImageFolder dataset: a folder or a .zip")],
    val_fraction: Annotated[float, typer.Option("--val-fraction")] = Hyperparameters().val_fraction,
    split_seed: Annotated[int, typer.Option("--split-seed")] = Hyperparameters().split_seed,
) -> None:
    """Classes, image counts and the train/validation split (written on first use)."""
    cache_dir = get_settings().cache_dir
    try:
        scan = scan_dataset(resolve_dataset(data, cache_dir))
        split = load_or_create_split(scan, val_fraction, split_seed, cache_dir)
    except DatasetError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    train = Counter(scan.labels[i] for i in split.train)
    val = Counter(scan.labels[i] for i in split.val)
    table = Table(title=f"{scan.root} ({len(scan.files)} images)")
    for column in ("class", "train", "val"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, name in enumerate(scan.class_names):
        table.add_row(name, str(train[label]), str(val[label]))
    console.print(table)
    console.print(f"split {split.split_id} in {split.manifest}")


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
