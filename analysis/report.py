"""The study report: report.md and its figures, written from a comparison of real runs.

Every number comes from the comparison (itself computed from stored metrics); the only typed-in
figures are the reference study's, shown in a column labelled as such, for context.
The tables come from `analysis.renderers`, the same ones GET /compare?format=md serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from analysis.compare import (
    Comparison,
    ComparisonRow,
    GroupSummary,
    accuracy_standard_error,
    rebase,
)
from analysis.formatting import (
    MISSING,
    fmt_delta,
    fmt_number,
    fmt_params,
    fmt_percent,
    fmt_relative,
    markdown_table,
    slug,
    stat_number,
    stat_percent,
)
from analysis.plots import (
    Curve,
    TradeoffPoint,
    curves_figure,
    gradient_flow_figure,
    gradients_figure,
    stages_of,
    to_png,
    tradeoff_figure,
)
from analysis.renderers import delta_table, fairness_lines, groups_table, jobs_table
from core.specs import EpochMetrics

# What the reference study reported (Plain-34 vs ResNet-34, 5 Indonesian food classes,
# 224x224, 8 epochs, SGD lr 1e-3). Shown only in columns headed "reference study reported".
REFERENCE_STUDY: dict[str, dict[str, float]] = {
    "plain34": {
        "best_val_accuracy": 0.271,
        "best_epoch": 5,
        "final_val_accuracy": 0.247,
        "final_train_accuracy": 0.227,
        "final_val_loss": 1.573,
        "final_train_loss": 1.591,
        "num_parameters": 21.29e6,
    },
    "resnet34": {
        "best_val_accuracy": 0.447,
        "best_epoch": 6,
        "final_val_accuracy": 0.300,
        "final_train_accuracy": 0.344,
        "final_val_loss": 1.516,
        "final_train_loss": 1.538,
        "num_parameters": 21.29e6,
    },
}

# --- the study report ----------------------------------------------------------------------------


@dataclass
class StudyData:
    """What the report is written from: the comparison and every job's epochs.

    `baselines` are job ids (first run of the plain and the residual baseline); the report has
    one comparison table against each. `dataset` is the dataset's public fields (name, classes,
    counts, skipped, num_images).
    """

    comparison: Comparison
    epochs: dict[int, list[EpochMetrics]]
    baselines: list[int] = field(default_factory=list)
    dataset: dict[str, Any] = field(default_factory=dict)
    title: str = "Architecture study"
    command: str | None = None


def write_report(study: StudyData, out_dir: Path) -> Path:
    """Write report.md and its PNG figures into `out_dir`; return the path of report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, figures = render_report(study)
    for name, figure in figures.items():
        (out_dir / name).write_bytes(to_png(figure))
    report = out_dir / "report.md"
    report.write_text(markdown, encoding="utf-8")
    return report


def render_report(study: StudyData) -> tuple[str, dict[str, Figure]]:
    """The Markdown text and the figures it refers to (file name -> figure)."""
    figures: dict[str, Figure] = {}
    sections = [
        _header(study),
        _summary(study),
        _data_section(study.dataset),
        _configuration_section(study.comparison),
        _fairness_section(study.comparison),
        _per_model_section(study, figures),
        _gradient_section(study, figures),
        *(_baseline_section(study.comparison, b) for b in study.baselines),
        _all_models_section(study, figures),
        _tradeoff_section(study, figures),
        _noise_section(study.comparison),
        _jobs_section(study.comparison),
    ]
    return "\n\n".join(s for s in sections if s) + "\n", figures


def _header(study: StudyData) -> str:
    name = study.dataset.get("name")
    lines = [
        f"# {study.title}" + (f": {name}" if name else ""),
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from jobs "
        f"{', '.join(str(i) for i in study.comparison.job_ids)}. Every number in this report "
        "is computed from the runs' stored metrics; the only typed-in figures are the "
        "reference study's, in columns labelled *reference study reported*.",
    ]
    if study.command:
        lines += ["", f"Produced with `{study.command}`."]
    return "\n".join(lines)


def _groups_by_job(comparison: Comparison) -> dict[int, GroupSummary]:
    return {job_id: g for g in comparison.groups for job_id in g.job_ids}


def _summary(study: StudyData) -> str:
    """A few sentences that answer the study's questions from the numbers, noise included."""
    comparison = study.comparison
    by_job = _groups_by_job(comparison)
    baselines = [by_job[b] for b in study.baselines if b in by_job]
    lines = ["## Summary", ""]
    if len(baselines) >= 2:
        plain, residual = baselines[0], baselines[1]
        lines.append(_degradation_sentence(plain, residual))
        versus_plain = rebase(comparison, study.baselines[0])
        residual_vs_plain = _groups_by_job(versus_plain)[study.baselines[1]]
        lines.append(
            f"- **{residual.label} vs {plain.label}**: best validation accuracy "
            f"{_accuracy_change(residual_vs_plain)}."
        )
    if baselines:
        reference = baselines[-1]
        versus = _groups_by_job(rebase(comparison, study.baselines[len(baselines) - 1]))
        baseline_keys = {g.group for g in baselines}
        for group in comparison.groups:
            if group.group in baseline_keys:
                continue
            lines.append(
                f"- **{group.label} vs {reference.label}**: "
                f"{_cost_benefit(versus[group.job_ids[0]])}."
            )
    top = max((g.stats["best_val_accuracy"].mean or 0.0) for g in comparison.groups)
    leaders = [g.label for g in comparison.groups if g.stats["best_val_accuracy"].mean == top]
    lines.append(
        f"- Highest best validation accuracy: **{' = '.join(leaders)}** ({fmt_percent(top)})"
        + (" — a tie." if len(leaders) > 1 else ".")
    )
    if len(comparison.groups) > 1 and _all_within_noise(comparison, study.baselines):
        lines.append(
            "- None of these differences in best validation accuracy is larger than the noise "
            "(see *Noise*): these runs do not rank the architectures. More epochs, more images "
            "or `--repeats` would."
        )
    if comparison.warnings:
        lines.append(f"- ⚠ {len(comparison.warnings)} fairness warning(s): see *Fair comparison*.")
    return "\n".join(lines)


def _all_within_noise(comparison: Comparison, baselines: Sequence[int]) -> bool:
    deltas = [
        group.delta.get("best_val_accuracy")
        for baseline in baselines
        for group in rebase(comparison, baseline).groups
    ]
    return all(d is None or d.within_noise is not False for d in deltas)


def _degradation_sentence(plain: GroupSummary, residual: GroupSummary) -> str:
    """Degradation shows as a higher *training* loss of the plain net, not only worse validation."""
    p_loss, r_loss = plain.stats["final_train_loss"].mean, residual.stats["final_train_loss"].mean
    p_acc = plain.stats["final_train_accuracy"].mean
    r_acc = residual.stats["final_train_accuracy"].mean
    if p_loss is None or r_loss is None:
        return f"- Degradation: no finished epochs for {plain.label} or {residual.label}."
    verdict = (
        "fits its training set worse than"
        if p_loss > r_loss
        else "fits its training set at least as well as"
    )
    return (
        f"- **Degradation**: {plain.label} {verdict} {residual.label} — final training loss "
        f"{p_loss:.3f} vs {r_loss:.3f}, training accuracy {fmt_percent(p_acc)} vs "
        f"{fmt_percent(r_acc)}."
    )


def _accuracy_change(group: GroupSummary) -> str:
    d = group.delta.get("best_val_accuracy")
    if d is None or d.absolute is None:
        return "not available"
    noise = (
        f"within noise (±{100 * d.noise:.1f} pp)"
        if d.within_noise
        else f"beyond noise (±{100 * d.noise:.1f} pp)"
        if d.noise is not None
        else "noise unknown"
    )
    return f"{fmt_delta(d, True).replace(', ≈ noise', '')}, {noise}"


def _cost_benefit(group: GroupSummary) -> str:
    d = group.delta
    return (
        f"best validation accuracy {_accuracy_change(group)}; parameters "
        f"{fmt_relative(d.get('num_parameters'))}, GFLOPs {fmt_relative(d.get('gflops'))}, time "
        f"per epoch {fmt_relative(d.get('mean_epoch_seconds'))}, latency "
        f"{fmt_relative(d.get('inference_ms'))}"
    )


def _data_section(dataset: dict[str, Any]) -> str:
    if not dataset:
        return ""
    counts = dataset.get("counts") or {}
    rows = [
        [name, c.get("train", MISSING), c.get("val", MISSING), c.get("total", MISSING)]
        for name, c in counts.items()
    ]
    lines = [
        "## Data",
        "",
        f"{dataset.get('num_images', MISSING)} images in "
        f"{len(dataset.get('classes') or [])} classes (default split shown).",
        "",
        markdown_table(["class", "train", "validation", "total"], rows),
    ]
    skipped = dataset.get("skipped") or []
    if skipped:
        lines += ["", f"{len(skipped)} file(s) skipped:", ""]
        lines += [f"- `{s.get('file', s.get('path'))}`: {s.get('reason')}" for s in skipped]
    return "\n".join(lines)


def _configuration_section(comparison: Comparison) -> str:
    shared = comparison.shared_hyperparameters
    rows = [[f"`{k}`", f"`{v}`"] for k, v in shared.items()]
    lines = [
        "## Training configuration",
        "",
        "Settings shared by every job:",
        "",
        markdown_table(["setting", "value"], rows),
    ]
    if comparison.differing:
        lines += [
            "",
            "Settings that differ between jobs: "
            + ", ".join(f"`{k}`" for k in comparison.differing)
            + ".",
        ]
    models = [
        [
            g.label,
            f"`{g.architecture}`",
            f"`{g.explicit_options}`" if g.explicit_options else MISSING,
            ", ".join(str(s) for s in g.seeds),
        ]
        for g in comparison.groups
    ]
    header = ["model", "architecture", "options beyond the architecture's own", "seeds"]
    lines += ["", markdown_table(header, models)]
    return "\n".join(lines)


def _fairness_section(comparison: Comparison) -> str:
    return "\n".join(["## Fair comparison", "", *fairness_lines(comparison)])


# --- per model ------------------------------------------------------------------------------


def _curve(label: str, epochs: Sequence[EpochMetrics]) -> Curve:
    return Curve(label=label, epochs=epochs)


def _per_model_section(study: StudyData, figures: dict[str, Figure]) -> str:
    comparison = study.comparison
    rows = {r.job_id: r for r in comparison.rows}
    lines = ["## Results per model"]
    for group in comparison.groups:
        name = f"curves-{slug(group.label)}.png"
        runs = [rows[i] for i in group.job_ids]
        curves = [
            _curve(f"seed {r.seed}" if len(runs) > 1 else r.label, study.epochs.get(r.job_id, []))
            for r in runs
        ]
        figures[name] = curves_figure(curves, title=group.label)
        lines += [
            "",
            f"### {group.label}",
            "",
            f"![{group.label} curves]({name})",
            "",
            _model_summary_table(group),
        ]
        if len(runs) > 1:
            lines += ["", _runs_table(runs)]
        else:
            lines += ["", _epochs_table(study.epochs.get(runs[0].job_id, []))]
    return "\n".join(lines)


def _model_summary_table(group: GroupSummary) -> str:
    reference = REFERENCE_STUDY.get(group.architecture) if not group.explicit_options else None
    s = group.stats
    values = [
        (
            "best validation accuracy",
            stat_percent(s["best_val_accuracy"]),
            "best_val_accuracy",
            fmt_percent,
        ),
        (
            "final validation accuracy",
            stat_percent(s["final_val_accuracy"]),
            "final_val_accuracy",
            fmt_percent,
        ),
        (
            "final training accuracy",
            stat_percent(s["final_train_accuracy"]),
            "final_train_accuracy",
            fmt_percent,
        ),
        ("final validation loss", stat_number(s["final_val_loss"]), "final_val_loss", fmt_number),
        (
            "final training loss",
            stat_number(s["final_train_loss"]),
            "final_train_loss",
            fmt_number,
        ),
        ("parameters", fmt_params(s["num_parameters"].mean), "num_parameters", fmt_params),
        ("GFLOPs per image", fmt_number(s["gflops"].mean, 2), "gflops", fmt_number),
        ("seconds per epoch", stat_number(s["mean_epoch_seconds"], 1), "", None),
        ("inference latency (ms / image, CPU)", stat_number(s["inference_ms"], 1), "", None),
    ]
    header = ["metric", f"this study ({_runs(group)})"]
    if reference:
        header.append("reference study reported (224 px, 5 classes, 8 epochs)")
    rows = []
    for name, ours, key, fmt in values:
        row = [name, ours]
        if reference:
            row.append(fmt(reference[key]) if fmt and key in reference else MISSING)
        rows.append(row)
    return markdown_table(header, rows)


def _runs(group: GroupSummary) -> str:
    return "1 run" if len(group.job_ids) == 1 else f"mean ± std of {len(group.job_ids)} runs"


def _runs_table(runs: Sequence[ComparisonRow]) -> str:
    header = [
        "job",
        "seed",
        "best val acc (epoch)",
        "final train acc",
        "final val acc",
        "final train loss",
        "final val loss",
    ]
    rows = [
        [
            r.job_id,
            r.seed,
            f"{fmt_percent(r.best_val_accuracy)} ({r.best_epoch})",
            fmt_percent(r.final_train_accuracy),
            fmt_percent(r.final_val_accuracy),
            fmt_number(r.final_train_loss),
            fmt_number(r.final_val_loss),
        ]
        for r in runs
    ]
    return markdown_table(header, rows)


def _epochs_table(epochs: Sequence[EpochMetrics]) -> str:
    header = [
        "epoch",
        "train loss",
        "train acc",
        "val loss",
        "val acc",
        "lr",
        "seconds",
        "train img/s",
    ]
    rows = [
        [
            f"**{m.epoch}**" if m.is_best else m.epoch,
            fmt_number(m.train_loss),
            fmt_percent(m.train_accuracy),
            fmt_number(m.val_loss),
            fmt_percent(m.val_accuracy),
            f"{m.lr:.2g}",
            fmt_number(m.epoch_seconds, 1),
            fmt_number(m.train_images_per_second, 1),
        ]
        for m in sorted(epochs, key=lambda m: m.epoch)
    ]
    return markdown_table(header, rows) + "\n\nBold: the epoch the engine kept as best."


# --- gradient flow ---------------------------------------------------------------------------


def _gradient_section(study: StudyData, figures: dict[str, Figure]) -> str:
    first_runs = [(g.label, study.epochs.get(g.job_ids[0], [])) for g in study.comparison.groups]
    if not any(m.grad_norms for _, epochs in first_runs for m in epochs):
        return ""
    lines = [
        "## Gradient flow",
        "",
        "Mean L2 norm of each stage's gradient over an epoch (first run of each model), from "
        "the input (stem) to the output (classifier). Vanishing gradients would show as norms "
        "falling towards the stem; *stem / classifier* is the ratio of the two ends.",
        "",
        "![gradient flow](gradient-flow.png)",
    ]
    figures["gradient-flow.png"] = gradient_flow_figure([_curve(n, e) for n, e in first_runs])
    stages = stages_of([_curve(n, e) for n, e in first_runs])
    rows = []
    for label, epochs in first_runs:
        ordered = sorted(epochs, key=lambda m: m.epoch)
        for when, metrics in (("first", ordered[:1]), ("last", ordered[-1:])):
            norms = metrics[0].grad_norms if metrics else {}
            ratio = _ratio(norms.get(stages[0]), norms.get(stages[-1]))
            rows.append([label, when] + [_norm(norms.get(s)) for s in stages] + [ratio])
        name = f"gradients-{slug(label)}.png"
        figures[name] = gradients_figure(_curve(label, epochs))
        lines += ["", f"![{label} gradients]({name})"]
    header = ["model", "epoch", *stages, f"{stages[0]} / {stages[-1]}"]
    lines += ["", markdown_table(header, rows)]
    return "\n".join(lines)


def _norm(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3g}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return MISSING if numerator is None or not denominator else f"{numerator / denominator:.3g}"


# --- comparisons -----------------------------------------------------------------------------


def _baseline_section(comparison: Comparison, baseline_job_id: int) -> str:
    if baseline_job_id not in comparison.job_ids:
        return ""
    rebased = rebase(comparison, baseline_job_id)
    label = _groups_by_job(rebased)[baseline_job_id].label
    return "\n".join(
        [
            f"## Comparison against {label}",
            "",
            f"Each cell: value (difference to {label}: absolute, relative). Accuracy differences "
            "are in percentage points (pp); *≈ noise* marks a difference within two standard "
            "errors (see *Noise*).",
            "",
            delta_table(rebased),
        ]
    )


def _all_models_section(study: StudyData, figures: dict[str, Figure]) -> str:
    comparison = study.comparison
    figures["curves-all.png"] = curves_figure(
        [_curve(r.label, study.epochs.get(r.job_id, [])) for r in comparison.rows],
        title="All models",
    )
    return "\n".join(
        [
            "## Comparison of all models",
            "",
            "![all models](curves-all.png)",
            "",
            groups_table(comparison.groups),
            "",
            "Every job:",
            "",
            jobs_table(comparison),
        ]
    )


def _tradeoff_section(study: StudyData, figures: dict[str, Figure]) -> str:
    groups = study.comparison.groups
    points = [
        TradeoffPoint(
            label=g.label,
            accuracy=g.stats["best_val_accuracy"].mean,
            accuracy_std=g.stats["best_val_accuracy"].std,
            parameters=g.stats["num_parameters"].mean,
            gflops=g.stats["gflops"].mean,
            epoch_seconds=g.stats["mean_epoch_seconds"].mean,
            latency_ms=g.stats["inference_ms"].mean,
        )
        for g in groups
    ]
    figures["tradeoff.png"] = tradeoff_figure(points)
    header = [
        "model",
        "best val acc",
        "params",
        "GFLOPs",
        "s / epoch",
        "latency ms",
        "Pareto-optimal for",
    ]
    rows = [
        [
            p.label,
            fmt_percent(p.accuracy, p.accuracy_std),
            fmt_params(p.parameters),
            fmt_number(p.gflops, 2),
            fmt_number(p.epoch_seconds, 1),
            fmt_number(p.latency_ms, 1),
            ", ".join(pareto_costs(p, points)) or MISSING,
        ]
        for p in points
    ]
    return "\n".join(
        [
            "## Trade-offs",
            "",
            "Best validation accuracy against what it costs. A model is *Pareto-optimal* for a "
            "cost when no other model is at least as accurate and at most as costly (and better "
            "in one). Seconds per epoch and latency are wall-clock times on the machine that ran "
            "the jobs; other work on it inflates them, so compare them only between runs made "
            "under the same conditions.",
            "",
            "![trade-offs](tradeoff.png)",
            "",
            markdown_table(header, rows),
        ]
    )


COST_NAMES = {
    "parameters": "params",
    "gflops": "GFLOPs",
    "epoch_seconds": "time",
    "latency_ms": "latency",
}


def pareto_costs(point: TradeoffPoint, points: Sequence[TradeoffPoint]) -> list[str]:
    """The costs for which no other model dominates `point` (as accurate and cheaper)."""
    if point.accuracy is None:
        return []
    optimal = []
    for cost, name in COST_NAMES.items():
        mine = getattr(point, cost)
        if mine is None:
            continue
        dominated = any(
            other is not point
            and other.accuracy is not None
            and getattr(other, cost) is not None
            and other.accuracy >= point.accuracy
            and getattr(other, cost) <= mine
            and (other.accuracy > point.accuracy or getattr(other, cost) < mine)
            for other in points
        )
        if not dominated:
            optimal.append(name)
    return optimal


def _noise_section(comparison: Comparison) -> str:
    sizes = {r.val_size for r in comparison.rows if r.val_size}
    if not sizes:
        return ""
    n = min(sizes)
    se = accuracy_standard_error(0.5, n) or 0.0
    repeats = max(len(g.job_ids) for g in comparison.groups)
    text = (
        f"The validation set has {n} images, so one image is {100 / n:.1f} percentage "
        f"points and the binomial standard error of an accuracy near 50% is "
        f"±{100 * se:.1f} pp. Differences smaller than two standard errors of the difference "
        "are marked *≈ noise*."
    )
    text += (
        f" With {repeats} runs per model the standard errors come from the spread over seeds."
        if repeats > 1
        else " Each model ran once, so the error covers only the "
        "finite validation set, not the seed; `--repeats` measures that too."
    )
    return "\n".join(["## Noise", "", text])


def _jobs_section(comparison: Comparison) -> str:
    rows = [
        [r.job_id, r.label, r.status, r.seed, r.epochs_run, r.device or MISSING]
        for r in comparison.rows
    ]
    return "\n".join(
        [
            "## Jobs",
            "",
            markdown_table(["job", "model", "status", "seed", "epochs", "device"], rows),
        ]
    )
