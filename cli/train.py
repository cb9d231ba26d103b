"""`foodlab train`: one training run on this machine, with a progress bar and a summary.

Every hyperparameter gets a flag generated from `core.specs.Hyperparameters`, so a field
added there is a flag here without further code. Flags override the chosen preset.
"""

from __future__ import annotations

import inspect
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast, get_args

import typer
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from core.datasets import DatasetError
from core.settings import get_settings
from core.specs import (
    PRESETS,
    ArchitectureSpec,
    Hyperparameters,
    SpecError,
    TrainSpec,
    resolve_hyperparameters,
)

if TYPE_CHECKING:  # the engine imports torch; load it only when a run starts
    from workers.engine import BatchProgress, RunInfo, RunResult
    from workers.engine.callbacks import TrainingCallback

console = Console()
errors = Console(stderr=True)

# Fields that may be unset; "--grad-clip none" turns off what a preset set.
NONE_WORDS = {"none", "null", "off"}


def _flag_help(name: str, field: FieldInfo) -> str:
    presets = ", ".join(f"{p}: {getattr(hp, name)}" for p, hp in PRESETS.items())
    return f"{field.description or name.replace('_', ' ')} ({presets})"


def _metavar(field: FieldInfo) -> str:
    choices = get_args(field.annotation)
    if choices and all(isinstance(c, str) for c in choices):
        return "|".join(choices)
    names = [getattr(t, "__name__", str(t)) for t in (choices or (field.annotation,))]
    return "|".join(n.upper().replace("NONETYPE", "none") for n in names)


def _hyperparameter_options() -> list[inspect.Parameter]:
    """One keyword parameter (hence one typer option) per Hyperparameters field."""
    parameters = []
    annotation: Any  # an Annotated[...] type, built per field
    for name, field in Hyperparameters.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            option = typer.Option(
                f"{flag}/--no-{flag[2:]}",
                help=_flag_help(name, field),
                rich_help_panel="Hyperparameters",
                show_default=False,
            )
            annotation = Annotated[bool | None, option]
        else:
            # Strings, validated by pydantic with the preset: one place checks every value.
            option = typer.Option(
                flag,
                help=_flag_help(name, field),
                metavar=_metavar(field),
                rich_help_panel="Hyperparameters",
                show_default=False,
            )
            annotation = Annotated[str | None, option]
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
        )
    return parameters


def parse_architecture_options(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are JSON when they parse (true, 0.1, null), else strings."""
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError("--option", f"expected key=value, got {pair!r}")
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw
    return options


def hyperparameter_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    overrides = {}
    for name, value in flags.items():
        if value is None:
            continue
        nullable = type(None) in get_args(Hyperparameters.model_fields[name].annotation)
        overrides[name] = None if nullable and str(value).lower() in NONE_WORDS else value
    return overrides


def run_train(
    *,
    arch: Annotated[
        str, typer.Option("--arch", help="architecture (see models.ARCHITECTURES)")
    ] = "resnet34",
    data: Annotated[Path, typer.Option("--data", help="ImageFolder dataset: a folder or a .zip")],
    out: Annotated[Path, typer.Option("--out", help="run folder; an existing run resumes")],
    preset: Annotated[
        str, typer.Option("--preset", help=f"one of {', '.join(PRESETS)}")
    ] = "reference",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="architecture option key=value (repeatable), e.g. attn=se"),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="image cache and split manifests (default: $FOODLAB_HOME/cache)"
        ),
    ] = None,
    **hyperparameters: Any,
) -> None:
    """Train one model on one dataset; run it again with the same --out to resume."""
    from workers.engine import train  # torch loads here, not for `foodlab --help`

    try:
        spec = TrainSpec(
            architecture=ArchitectureSpec(
                name=arch, options=parse_architecture_options(option or [])
            ),
            hyperparameters=resolve_hyperparameters(
                preset, hyperparameter_overrides(hyperparameters), from_text=True
            ),
        )
        with _interrupt_cancels() as stop, ProgressDisplay(stop) as display:
            result = train(
                spec,
                data,
                out,
                callbacks=[cast("TrainingCallback", display)],
                cache_dir=cache_dir or get_settings().cache_dir,
            )
    except (SpecError, DatasetError, ValueError, OSError) as exc:
        # ModelConfigError and BundleError are ValueErrors too; all name what to fix, and an
        # OSError names the file (an output folder that cannot be written, a full disk).
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    print_summary(result, out)
    if result.status == "cancelled":
        raise typer.Exit(130)


# typer reads the signature: replace **hyperparameters by one keyword option per field.
# eval_str resolves the postponed (string) annotations, which carry the typer options.
_fixed = inspect.signature(run_train, eval_str=True).parameters.values()
run_train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [p for p in _fixed if p.kind is not inspect.Parameter.VAR_KEYWORD] + _hyperparameter_options()
)


class StopFlag:
    def __init__(self) -> None:
        self.requested = False


@contextmanager
def _interrupt_cancels() -> Iterator[StopFlag]:
    """The first Ctrl-C ends the run cleanly between batches; a second one aborts at once."""
    stop = StopFlag()

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        errors.print("stopping after this batch (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


class ProgressDisplay:
    """A TrainingCallback drawing a rich progress bar with an ETA over the whole run."""

    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.run_task = self.progress.add_task("run", total=None, status="")
        self.epoch_task = self.progress.add_task("epoch", total=None, status="", visible=False)
        self.total_epochs = self.start_epoch = 0

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    # The TrainingCallback interface, duck-typed so that this module does not import torch.
    def on_run_start(self, info: RunInfo) -> None:
        self.total_epochs, self.start_epoch = info.total_epochs, info.start_epoch
        console.print(
            f"{len(info.class_names)} classes, {info.train_size} training and "
            f"{info.val_size} validation images on {info.device}; "
            f"{info.num_parameters / 1e6:.1f}M parameters, {info.gflops:.2f} GFLOPs"
        )
        if info.skipped:
            console.print(f"[yellow]skipped {len(info.skipped)} unreadable image(s)[/]")
        if info.history:
            console.print(f"resuming after epoch {len(info.history)}")
        remaining = max(info.total_epochs - info.start_epoch + 1, 0)
        self.progress.update(
            self.run_task,
            total=remaining,
            completed=0,
            description=f"epochs {info.start_epoch}-{info.total_epochs}",
        )

    def on_batch_end(self, progress: BatchProgress) -> None:
        done = progress.epoch - self.start_epoch + progress.batch / progress.total_batches
        self.progress.update(self.run_task, completed=done)
        self.progress.update(
            self.epoch_task,
            visible=True,
            total=progress.total_batches,
            completed=progress.batch,
            description=f"epoch {progress.epoch}",
            status=f"loss {progress.running_loss:.3f}  {progress.images_per_second:.0f} img/s",
        )

    def on_epoch_end(self, metrics: Any) -> None:
        best = "  [green]best[/]" if metrics.is_best else ""
        console.print(
            f"epoch {metrics.epoch}/{self.total_epochs}  train loss {metrics.train_loss:.3f} "
            f"acc {_percent(metrics.train_accuracy)}  val loss {metrics.val_loss:.3f} "
            f"acc {_percent(metrics.val_accuracy)}  lr {metrics.lr:.2g}  "
            f"{metrics.train_images_per_second:.0f} img/s  {metrics.epoch_seconds:.1f}s{best}"
        )

    def on_checkpoint(self, event: Any) -> None:
        pass

    def should_stop(self) -> bool:
        return self.stop.requested

    def on_run_end(self, result: RunResult) -> None:
        pass


def print_summary(result: RunResult, out: Path) -> None:
    table = Table(
        title=f"{result.status}: {len(result.epochs)} epoch(s), best epoch "
        f"{result.best_epoch or '-'}"
    )
    for column in (
        "epoch",
        "train loss",
        "train acc",
        "val loss",
        "val acc",
        "gap",
        "lr",
        "img/s",
        "s",
    ):
        table.add_column(column, justify="right")
    for m in result.epochs:
        style = "bold green" if m.epoch == result.best_epoch else None
        table.add_row(
            str(m.epoch),
            f"{m.train_loss:.3f}",
            _percent(m.train_accuracy),
            f"{m.val_loss:.3f}",
            _percent(m.val_accuracy),
            _percent(m.generalization_gap),
            f"{m.lr:.2g}",
            f"{m.train_images_per_second:.0f}",
            f"{m.epoch_seconds:.1f}",
            style=style,
        )
    console.print(table)
    best = next((m for m in result.epochs if m.epoch == result.best_epoch), None)
    if best is not None and best.best_details is not None:
        per_class = ", ".join(
            f"{name} {_percent(acc)}" for name, acc in best.best_details.per_class_accuracy.items()
        )
        console.print(
            f"best epoch per class: {per_class}; macro F1 {best.best_details.macro_f1:.3f}"
        )
    if result.test is not None:
        console.print(
            f"held-out test ({result.test.num_images} images, best epoch "
            f"{result.test.epoch}): accuracy {_percent(result.test.accuracy)}, loss "
            f"{result.test.loss:.3f}, macro F1 {result.test.macro_f1:.3f}"
        )
    for skipped in result.skipped:
        console.print(f"[yellow]skipped[/] {skipped.path}: {skipped.reason}", markup=True)
    if result.bundle is not None:
        console.print(f"checkpoints in {out}; inference bundle {result.bundle}")


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(run_train)
