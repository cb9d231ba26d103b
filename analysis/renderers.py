"""A comparison as CSV and as Markdown tables (GET /compare?format=csv|md, and the report)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence

from analysis.compare import Comparison, ComparisonRow, Delta, GroupSummary, Stat
from analysis.formatting import (
    MISSING,
    fmt_delta,
    fmt_number,
    fmt_params,
    fmt_percent,
    fmt_relative,
    markdown_table,
    stat_number,
    stat_percent,
)

# --- the comparison as CSV and Markdown (GET /compare?format=...) --------------------------------

ROW_COLUMNS: list[tuple[str, Callable[[ComparisonRow], object]]] = [
    ("job_id", lambda r: r.job_id),
    ("label", lambda r: r.label),
    ("status", lambda r: r.status),
    ("architecture", lambda r: r.architecture),
    ("seed", lambda r: r.seed),
    ("num_parameters", lambda r: r.num_parameters),
    ("gflops", lambda r: r.gflops),
    ("best_val_accuracy", lambda r: r.best_val_accuracy),
    ("best_epoch", lambda r: r.best_epoch),
    ("final_train_accuracy", lambda r: r.final_train_accuracy),
    ("final_val_accuracy", lambda r: r.final_val_accuracy),
    ("final_train_loss", lambda r: r.final_train_loss),
    ("final_val_loss", lambda r: r.final_val_loss),
    ("mean_epoch_seconds", lambda r: r.mean_epoch_seconds),
    ("train_images_per_second", lambda r: r.train_images_per_second),
    ("inference_ms", lambda r: r.inference_ms),
]
DELTA_COLUMNS = (
    "best_val_accuracy",
    "final_val_accuracy",
    "final_val_loss",
    "num_parameters",
    "gflops",
    "mean_epoch_seconds",
    "inference_ms",
)


def comparison_csv(comparison: Comparison) -> str:
    """One line per job; delta_<metric> and rel_delta_<metric> against the baseline job."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [name for name, _ in ROW_COLUMNS]
        + [f"{kind}_{m}" for m in DELTA_COLUMNS for kind in ("delta", "rel_delta")]
    )
    for row in comparison.rows:
        deltas = [row.delta.get(m) for m in DELTA_COLUMNS]
        writer.writerow(
            [_csv(value(row)) for _, value in ROW_COLUMNS]
            + [
                _csv(getattr(d, kind) if d else None)
                for d in deltas
                for kind in ("absolute", "relative")
            ]
        )
    return out.getvalue()


def _csv(value: object) -> object:
    return "" if value is None else value


def comparison_markdown(comparison: Comparison) -> str:
    """The per-job table with deltas, the repeat groups (if any) and the fairness warnings."""
    baseline = _baseline_label(comparison)
    parts = [
        f"Deltas against **{baseline}** (job {comparison.baseline_job_id}).",
        "",
        jobs_table(comparison),
    ]
    if any(len(g.job_ids) > 1 for g in comparison.groups):
        parts += ["", "Mean ± std over repeats:", "", groups_table(comparison.groups)]
    parts += ["", *fairness_lines(comparison)]
    return "\n".join(parts) + "\n"


def _baseline_label(comparison: Comparison) -> str:
    row = next((r for r in comparison.rows if r.job_id == comparison.baseline_job_id), None)
    return row.label if row else MISSING


def jobs_table(comparison: Comparison) -> str:
    header = [
        "job",
        "model",
        "params",
        "GFLOPs",
        "best val acc (epoch)",
        "Δ best val acc",
        "final train / val acc",
        "final train / val loss",
        "s / epoch",
        "train img/s",
        "latency ms",
    ]
    rows = [
        [
            r.job_id,
            r.label,
            fmt_params(r.num_parameters),
            fmt_number(r.gflops, 2),
            f"{fmt_percent(r.best_val_accuracy)} ({r.best_epoch or MISSING})",
            "baseline"
            if r.job_id == comparison.baseline_job_id
            else fmt_delta(r.delta.get("best_val_accuracy"), percent_points=True),
            f"{fmt_percent(r.final_train_accuracy)} / {fmt_percent(r.final_val_accuracy)}",
            f"{fmt_number(r.final_train_loss)} / {fmt_number(r.final_val_loss)}",
            fmt_number(r.mean_epoch_seconds, 1),
            fmt_number(r.train_images_per_second, 1),
            fmt_number(r.inference_ms, 1),
        ]
        for r in comparison.rows
    ]
    return markdown_table(header, rows)


def fairness_lines(comparison: Comparison) -> list[str]:
    if not comparison.warnings:
        return [
            "**Fair comparison:** every job used the same dataset split, image size, "
            "epochs and hyperparameters; only the architecture (and seeds within repeats) "
            "differ."
        ]
    return ["**Fair comparison: not guaranteed.**", ""] + [
        f"- ⚠ `{w.field}`: {w.message}" for w in comparison.warnings
    ]


# --- group (repeat) statistics -------------------------------------------------------------------


def groups_table(groups: Sequence[GroupSummary]) -> str:
    header = [
        "model",
        "runs",
        "params",
        "GFLOPs",
        "best val acc",
        "final train acc",
        "final val acc",
        "final train loss",
        "final val loss",
        "s / epoch",
        "train img/s",
        "latency ms",
    ]
    rows = [
        [
            g.label,
            len(g.job_ids),
            fmt_params(g.stats["num_parameters"].mean),
            fmt_number(g.stats["gflops"].mean, 2),
            stat_percent(g.stats["best_val_accuracy"]),
            stat_percent(g.stats["final_train_accuracy"]),
            stat_percent(g.stats["final_val_accuracy"]),
            stat_number(g.stats["final_train_loss"]),
            stat_number(g.stats["final_val_loss"]),
            stat_number(g.stats["mean_epoch_seconds"], 1),
            stat_number(g.stats["train_images_per_second"], 1),
            stat_number(g.stats["inference_ms"], 1),
        ]
        for g in groups
    ]
    return markdown_table(header, rows)


# (header, metric, how to show the value, how to show the difference)
DELTA_TABLE: list[tuple[str, str, Callable[[Stat], str], Callable[[Delta | None], str]]] = [
    (
        "best val acc",
        "best_val_accuracy",
        lambda s: fmt_percent(s.mean, s.std),
        lambda d: fmt_delta(d, percent_points=True),
    ),
    (
        "final val acc",
        "final_val_accuracy",
        lambda s: fmt_percent(s.mean, s.std),
        lambda d: fmt_delta(d, percent_points=True),
    ),
    ("final val loss", "final_val_loss", lambda s: fmt_number(s.mean, 3, s.std), fmt_delta),
    ("params", "num_parameters", lambda s: fmt_params(s.mean), lambda d: fmt_relative(d)),
    ("GFLOPs", "gflops", lambda s: fmt_number(s.mean, 2), lambda d: fmt_relative(d)),
    ("s / epoch", "mean_epoch_seconds", lambda s: fmt_number(s.mean, 1), lambda d: fmt_relative(d)),
    ("latency ms", "inference_ms", lambda s: fmt_number(s.mean, 1), lambda d: fmt_relative(d)),
]


def delta_table(comparison: Comparison) -> str:
    """Every model against the comparison's baseline group (means when there are repeats)."""
    header = ["model"] + [name for name, *_ in DELTA_TABLE]
    rows = []
    for g in comparison.groups:
        is_baseline = g.group == comparison.baseline_group
        rows.append(
            [f"{g.label} (baseline)" if is_baseline else g.label]
            + [
                value(g.stats[metric])
                if is_baseline
                else f"{value(g.stats[metric])} ({difference(g.delta.get(metric))})"
                for _, metric, value, difference in DELTA_TABLE
            ]
        )
    return markdown_table(header, rows)
