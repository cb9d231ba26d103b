"""A comparison as CSV and as Markdown tables (GET /compare?format=csv|md, and the report)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence

from analysis.compare import (
    Comparison,
    ComparisonRow,
    Delta,
    FairnessWarning,
    GroupSummary,
    Stat,
)
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
from analysis.i18n import N_, _, current

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
    ("test_accuracy", lambda r: r.test_accuracy),
    ("test_size", lambda r: r.test_size),
    ("final_train_accuracy", lambda r: r.final_train_accuracy),
    ("final_val_accuracy", lambda r: r.final_val_accuracy),
    ("final_train_loss", lambda r: r.final_train_loss),
    ("final_val_loss", lambda r: r.final_val_loss),
    ("mean_epoch_seconds", lambda r: r.mean_epoch_seconds),
    ("mean_epoch_cpu_seconds", lambda r: r.mean_epoch_cpu_seconds),
    ("mean_load_average", lambda r: r.mean_load_average),
    ("train_images_per_second", lambda r: r.train_images_per_second),
    ("inference_ms", lambda r: r.inference_ms),
]
DELTA_COLUMNS = (
    "best_val_accuracy",
    "test_accuracy",
    "final_val_accuracy",
    "final_val_loss",
    "num_parameters",
    "gflops",
    "mean_epoch_seconds",
    "mean_epoch_cpu_seconds",
    "inference_ms",
)


def comparison_csv(comparison: Comparison) -> str:
    """One line per job; delta_<metric> and rel_delta_<metric> against the baseline job."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [name for name, _value in ROW_COLUMNS]
        + [f"{kind}_{m}" for m in DELTA_COLUMNS for kind in ("delta", "rel_delta")]
    )
    for row in comparison.rows:
        deltas = [row.delta.get(m) for m in DELTA_COLUMNS]
        writer.writerow(
            [_csv(value(row)) for _name, value in ROW_COLUMNS]
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
        _("Deltas against **{baseline}** (job {job}).").format(
            baseline=baseline, job=comparison.baseline_job_id
        ),
        "",
        jobs_table(comparison),
    ]
    if any(len(g.job_ids) > 1 for g in comparison.groups):
        parts += ["", _("Mean ± std over repeats:"), "", groups_table(comparison.groups)]
    parts += ["", *fairness_lines(comparison)]
    return "\n".join(parts) + "\n"


def _baseline_label(comparison: Comparison) -> str:
    row = next((r for r in comparison.rows if r.job_id == comparison.baseline_job_id), None)
    return row.label if row else MISSING


def jobs_table(comparison: Comparison) -> str:
    header = [
        _("job"),
        _("model"),
        _("params"),
        _("GFLOPs"),
        _("best val acc (epoch)"),
        _("Δ best val acc"),
        _("test acc"),
        _("final train / val acc"),
        _("final train / val loss"),
        _("s / epoch"),
        _("CPU s / epoch"),
        _("train img/s"),
        _("latency ms"),
    ]
    rows = [
        [
            r.job_id,
            r.label,
            fmt_params(r.num_parameters),
            fmt_number(r.gflops, 2),
            f"{fmt_percent(r.best_val_accuracy)} ({r.best_epoch or MISSING})",
            _("baseline")
            if r.job_id == comparison.baseline_job_id
            else fmt_delta(r.delta.get("best_val_accuracy"), percent_points=True),
            fmt_percent(r.test_accuracy),
            f"{fmt_percent(r.final_train_accuracy)} / {fmt_percent(r.final_val_accuracy)}",
            f"{fmt_number(r.final_train_loss)} / {fmt_number(r.final_val_loss)}",
            fmt_number(r.mean_epoch_seconds, 1),
            fmt_number(r.mean_epoch_cpu_seconds, 1),
            fmt_number(r.train_images_per_second, 1),
            fmt_number(r.inference_ms, 1),
        ]
        for r in comparison.rows
    ]
    return markdown_table(header, rows)


def fairness_lines(comparison: Comparison) -> list[str]:
    if not comparison.warnings:
        return [
            _(
                "**Fair comparison:** every job used the same dataset split, image size, "
                "epochs and hyperparameters; only the architecture (and seeds within repeats) "
                "differ."
            )
        ]
    return [_("**Fair comparison: not guaranteed.**"), ""] + [
        f"- ⚠ `{w.field}`: {warning_text(w)}" for w in comparison.warnings
    ]


# Why a difference biases the comparison, by the warning's field (its prefix up to a dot).
WARNING_REASONS = {
    "dataset_id": N_("jobs were trained on different datasets"),
    "hyperparameters.val_fraction": N_("jobs use different train/validation splits"),
    "hyperparameters.split_seed": N_("jobs use different train/validation splits"),
    "hyperparameters.image_size": N_(
        "jobs use different image sizes: accuracy and cost depend on the input resolution"
    ),
    "hyperparameters.epochs": N_("jobs were given different numbers of epochs"),
    "hyperparameters.seed": N_(
        "configurations were run with different seeds, so their differences include "
        "initialisation and shuffling noise"
    ),
    "hyperparameters": N_("a hyperparameter differs, not only the architecture"),
    "device": N_(
        "jobs ran on different devices: seconds per epoch and images/second are not comparable"
    ),
    "status": N_("not every job succeeded; their numbers are partial"),
    "epochs_run": N_("jobs trained for different numbers of epochs"),
}


def warning_text(warning: FairnessWarning) -> str:
    """The warning's message; in another language, its reason translated and the values."""
    if current().code == "en":
        return warning.message
    reason = WARNING_REASONS.get(warning.field) or WARNING_REASONS.get(
        warning.field.split(".")[0], N_("the jobs differ in this setting")
    )
    values = ", ".join(
        _("job {job}: {value}").format(job=job, value=value)
        for job, value in warning.values.items()
    )
    return f"{_(reason)} ({values})"


# --- group (repeat) statistics -------------------------------------------------------------------


def groups_table(groups: Sequence[GroupSummary]) -> str:
    header = [
        _("model"),
        _("runs"),
        _("params"),
        _("GFLOPs"),
        _("best val acc"),
        _("test acc"),
        _("final train acc"),
        _("final val acc"),
        _("final train loss"),
        _("final val loss"),
        _("s / epoch"),
        _("CPU s / epoch"),
        _("train img/s"),
        _("latency ms"),
    ]
    rows = [
        [
            g.label,
            len(g.job_ids),
            fmt_params(g.stats["num_parameters"].mean),
            fmt_number(g.stats["gflops"].mean, 2),
            stat_percent(g.stats["best_val_accuracy"]),
            stat_percent(g.stats["test_accuracy"]),
            stat_percent(g.stats["final_train_accuracy"]),
            stat_percent(g.stats["final_val_accuracy"]),
            stat_number(g.stats["final_train_loss"]),
            stat_number(g.stats["final_val_loss"]),
            stat_number(g.stats["mean_epoch_seconds"], 1),
            stat_number(g.stats["mean_epoch_cpu_seconds"], 1),
            stat_number(g.stats["train_images_per_second"], 1),
            stat_number(g.stats["inference_ms"], 1),
        ]
        for g in groups
    ]
    return markdown_table(header, rows)


# (header, metric, how to show the value, how to show the difference)
DELTA_TABLE: list[tuple[str, str, Callable[[Stat], str], Callable[[Delta | None], str]]] = [
    (
        N_("best val acc"),
        "best_val_accuracy",
        lambda s: fmt_percent(s.mean, s.std),
        lambda d: fmt_delta(d, percent_points=True),
    ),
    (
        N_("test acc"),
        "test_accuracy",
        lambda s: fmt_percent(s.mean, s.std),
        lambda d: fmt_delta(d, percent_points=True),
    ),
    (
        N_("final val acc"),
        "final_val_accuracy",
        lambda s: fmt_percent(s.mean, s.std),
        lambda d: fmt_delta(d, percent_points=True),
    ),
    (N_("final val loss"), "final_val_loss", lambda s: fmt_number(s.mean, 3, s.std), fmt_delta),
    (N_("params"), "num_parameters", lambda s: fmt_params(s.mean), fmt_relative),
    (N_("GFLOPs"), "gflops", lambda s: fmt_number(s.mean, 2), fmt_relative),
    (N_("s / epoch"), "mean_epoch_seconds", lambda s: fmt_number(s.mean, 1), fmt_relative),
    (N_("CPU s / epoch"), "mean_epoch_cpu_seconds", lambda s: fmt_number(s.mean, 1), fmt_relative),
    (N_("latency ms"), "inference_ms", lambda s: fmt_number(s.mean, 1), fmt_relative),
]


def delta_table(comparison: Comparison) -> str:
    """Every model against the comparison's baseline group (means when there are repeats)."""
    header = [_("model")] + [_(name) for name, *_rest in DELTA_TABLE]
    rows = []
    for g in comparison.groups:
        is_baseline = g.group == comparison.baseline_group
        rows.append(
            [_("{model} (baseline)").format(model=g.label) if is_baseline else g.label]
            + [
                value(g.stats[metric])
                if is_baseline
                else f"{value(g.stats[metric])} ({difference(g.delta.get(metric))})"
                for _name, metric, value, difference in DELTA_TABLE
            ]
        )
    return markdown_table(header, rows)
