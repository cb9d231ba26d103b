"""What `foodlab study` shows while it waits: a progress bar per job, then a summary table."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from analysis.compare import Comparison
from analysis.formatting import fmt_number, fmt_params, fmt_percent
from analysis.study import Backend, JobState

POLL_SECONDS = 1.0


def follow(
    backend: Backend,
    labels: dict[int, str],
    sleep: Callable[[float], None],
    console: Console,
) -> None:
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
