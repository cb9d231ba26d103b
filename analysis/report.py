"""The study report: report.md and its figures, written from a comparison of real runs.

Every number comes from the comparison (itself computed from stored metrics); the only typed-in
figures are the reference study's, shown in a column labelled as such, for context.
The tables come from `analysis.renderers`, the same ones GET /compare?format=md serves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from matplotlib.figure import Figure

from analysis.compare import (
    Comparison,
    ComparisonRow,
    GroupSummary,
    Stat,
    accuracy_standard_error,
    rebase,
)
from analysis.formatting import (
    MISSING,
    fmt_delta,
    fmt_number,
    fmt_params,
    fmt_percent,
    fmt_points,
    fmt_relative,
    markdown_table,
    slug,
    stat_number,
    stat_percent,
)
from analysis.i18n import N_, _, ngettext, number
from analysis.plots import (
    Curve,
    TradeoffPoint,
    curves_figure,
    gradient_flow_figure,
    gradients_figure,
    stages_of,
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


@dataclass(frozen=True)
class TuningRow:
    """One network of a tuned study: its search's best, and seeds of tuned and untuned."""

    architecture: str
    search_id: int
    trials: int
    best_params: dict[str, Any]
    search_value: float  # the search's objective (best validation accuracy) at its best trial
    tuned: dict[str, Stat]  # the comparison statistics of the tuned repeats
    untuned: dict[str, Stat]


@dataclass(frozen=True)
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
    title: str = N_("Architecture study")
    command: str | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # architecture name -> the registry's facts about it (name, description, default_options)
    architectures: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning: list[TuningRow] = field(default_factory=list)  # `study --tune`: tuned vs untuned


def render_report(study: StudyData) -> tuple[str, dict[str, Figure]]:
    """The Markdown text and the figures it refers to (file name -> figure)."""
    figures: dict[str, Figure] = {}
    sections = [
        _header(study),
        _summary(study),
        _data_section(study.dataset),
        _configuration_section(study.comparison),
        _fairness_section(study.comparison),
        _tuning_section(study.tuning),
        _per_model_section(study, figures),
        _gradient_section(study, figures),
        *(_baseline_section(study.comparison, b) for b in study.baselines),
        _all_models_section(study, figures),
        _tradeoff_section(study, figures),
        _noise_section(study.comparison),
        _jobs_section(study.comparison),
    ]
    return "\n\n".join(s for s in sections if s) + "\n", figures


def _tuning_section(rows: Sequence[TuningRow]) -> str:
    """Tuned against untuned, per network: whether a gap is the architecture's or the recipe's."""
    if not rows:
        return ""
    header = [
        _("model"),
        _("search (trials)"),
        _("best parameters"),
        _("search's best val acc"),
        _("untuned test acc"),
        _("tuned test acc"),
        _("tuned − untuned"),
        _("untuned best val acc"),
        _("tuned best val acc"),
    ]
    table = []
    for row in rows:
        tuned, untuned = row.tuned["test_accuracy"], row.untuned["test_accuracy"]
        gain = (
            MISSING
            if tuned.mean is None or untuned.mean is None
            else _("{points} pp").format(points=number(100 * (tuned.mean - untuned.mean), "+.1f"))
        )
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.best_params.items()
        )
        table.append(
            [
                row.architecture,
                f"{row.search_id} ({row.trials})",
                params,
                fmt_percent(row.search_value),
                stat_percent(untuned),
                stat_percent(tuned),
                gain,
                stat_percent(row.untuned["best_val_accuracy"]),
                stat_percent(row.tuned["best_val_accuracy"]),
            ]
        )
    return "\n".join(
        [
            "## " + _("Tuned against untuned"),
            "",
            _(
                "Each network had a search with the same space, the same number of trials and "
                "the same budget (epochs, split, held-out test part), chosen on validation "
                "accuracy; then its best configuration and its untuned preset were trained with "
                "the same seeds. Test accuracy (mean ± std over seeds) is on images that neither "
                "the searches nor the training saw. A gap between networks that survives tuning "
                "is the architecture's; one that tuning closes was the recipe's. The rest of "
                "this report compares the tuned runs."
            ),
            "",
            markdown_table(header, table),
        ]
    )


def _header(study: StudyData) -> str:
    name = study.dataset.get("name")
    return title_and_provenance(study, f"# {_(study.title)}" + (f": {name}" if name else ""))


def title_and_provenance(study: StudyData, title: str) -> str:
    """The title, where the numbers come from, and the command that made the report."""
    lines = [
        title,
        "",
        _(
            "Generated {when} UTC from jobs {jobs}. Every number in this report is computed "
            "from the runs' stored metrics; the only typed-in figures are the reference "
            "study's, in columns labelled *reference study reported*."
        ).format(
            when=f"{study.generated_at:%Y-%m-%d %H:%M}",
            jobs=", ".join(str(i) for i in study.comparison.job_ids),
        ),
    ]
    if study.command:
        lines += ["", _("Produced with `{command}`.").format(command=study.command)]
    return "\n".join(lines)


def result_metric(comparison: Comparison) -> tuple[str, str]:
    """(field, words) of the accuracy the report names as the result: the held-out test
    accuracy when every job has one, else best validation accuracy (which also chose the
    epoch, so it is optimistic)."""
    if comparison.rows and all(r.test_accuracy is not None for r in comparison.rows):
        return "test_accuracy", N_("test accuracy")
    return "best_val_accuracy", N_("best validation accuracy")


def cost_time_metric(comparison: Comparison) -> tuple[str, str]:
    """(field, words) of the training time the trade-offs use: CPU seconds per epoch when every
    job recorded them (another process on the machine barely changes them), else wall seconds."""
    if comparison.rows and all(r.mean_epoch_cpu_seconds is not None for r in comparison.rows):
        return "mean_epoch_cpu_seconds", N_("CPU seconds per epoch")
    return "mean_epoch_seconds", N_("wall seconds per epoch")


def groups_by_job(comparison: Comparison) -> dict[int, GroupSummary]:
    return {job_id: g for g in comparison.groups for job_id in g.job_ids}


def _summary(study: StudyData) -> str:
    """A few sentences that answer the study's questions from the numbers, noise included."""
    comparison = study.comparison
    by_job = groups_by_job(comparison)
    baselines = [by_job[b] for b in study.baselines if b in by_job]
    lines = ["## " + _("Summary"), ""]
    if len(baselines) >= 2:
        plain, residual = baselines[0], baselines[1]
        lines.append(_degradation_sentence(plain, residual))
        versus_plain = rebase(comparison, study.baselines[0])
        residual_vs_plain = groups_by_job(versus_plain)[study.baselines[1]]
        lines.append(
            _("- **{model} vs {baseline}**: best validation accuracy {change}.").format(
                model=residual.label,
                baseline=plain.label,
                change=accuracy_change(residual_vs_plain),
            )
        )
    if baselines:
        reference = baselines[-1]
        versus = groups_by_job(rebase(comparison, study.baselines[len(baselines) - 1]))
        baseline_keys = {g.group for g in baselines}
        for group in comparison.groups:
            if group.group in baseline_keys:
                continue
            lines.append(
                _("- **{model} vs {baseline}**: {cost_benefit}.").format(
                    model=group.label,
                    baseline=reference.label,
                    cost_benefit=cost_benefit(versus[group.job_ids[0]]),
                )
            )
    lines.append("- " + highest_accuracy_sentence(comparison))
    if result_metric(comparison)[0] == "test_accuracy":
        sizes = sorted({r.test_size for r in comparison.rows if r.test_size})
        lines.append(
            "- "
            + _(
                "**The result is the test accuracy**: each job's best checkpoint scored once on "
                "{images} held-out images that no training, early stopping, checkpoint choice or "
                "search saw. Best validation accuracy chose the epoch, so it is optimistic; it is "
                "shown beside it."
            ).format(images="/".join(map(str, sizes)))
        )
    if len(comparison.groups) > 1 and all_within_noise(comparison, study.baselines):
        lines.append(
            _(
                "- None of these differences in best validation accuracy is larger than the "
                "noise (see *Noise*): these runs do not rank the architectures. More epochs, "
                "more images or `--repeats` would."
            )
        )
    if comparison.warnings:
        lines.append(
            _("- ⚠ {count} fairness warning(s): see *Fair comparison*.").format(
                count=len(comparison.warnings)
            )
        )
    return "\n".join(lines)


def highest_accuracy_sentence(comparison: Comparison) -> str:
    """Which model has the highest result accuracy (test when held out, else best validation;
    a tie is said to be one)."""
    metric, words = result_metric(comparison)
    top = max((g.stats[metric].mean or 0.0) for g in comparison.groups)
    leaders = [g.label for g in comparison.groups if g.stats[metric].mean == top]
    message = (
        _("Highest {metric}: **{models}** ({value}) — a tie.")
        if len(leaders) > 1
        else _("Highest {metric}: **{models}** ({value}).")
    )
    return message.format(metric=_(words), models=" = ".join(leaders), value=fmt_percent(top))


def all_within_noise(comparison: Comparison, baselines: Sequence[int]) -> bool:
    deltas = [
        group.delta.get("best_val_accuracy")
        for baseline in baselines
        for group in rebase(comparison, baseline).groups
    ]
    return all(d is None or d.within_noise is not False for d in deltas)


def _degradation_sentence(plain: GroupSummary, residual: GroupSummary) -> str:
    """Degradation shows as a higher *training* loss of the plain net, not only worse validation."""
    return "- " + degradation_sentence(plain, residual)


def degradation_sentence(plain: GroupSummary, residual: GroupSummary) -> str:
    """Whether the plain net fits its training set worse, from the final training loss."""
    p_loss, r_loss = plain.stats["final_train_loss"].mean, residual.stats["final_train_loss"].mean
    p_acc = plain.stats["final_train_accuracy"].mean
    r_acc = residual.stats["final_train_accuracy"].mean
    if p_loss is None or r_loss is None:
        return _("Degradation: no finished epochs for {plain} or {residual}.").format(
            plain=plain.label, residual=residual.label
        )
    message = (
        _(
            "**Degradation**: {plain} fits its training set worse than {residual} — final "
            "training loss {plain_loss} vs {residual_loss}, training accuracy {plain_accuracy} "
            "vs {residual_accuracy}."
        )
        if p_loss > r_loss
        else _(
            "**Degradation**: {plain} fits its training set at least as well as {residual} — "
            "final training loss {plain_loss} vs {residual_loss}, training accuracy "
            "{plain_accuracy} vs {residual_accuracy}."
        )
    )
    return message.format(
        plain=plain.label,
        residual=residual.label,
        plain_loss=fmt_number(p_loss),
        residual_loss=fmt_number(r_loss),
        plain_accuracy=fmt_percent(p_acc),
        residual_accuracy=fmt_percent(r_acc),
    )


def accuracy_change(group: GroupSummary) -> str:
    """'+4.9 pp, +12%, within noise (±21.7 pp)': the best-accuracy delta and whether it counts."""
    d = group.delta.get("best_val_accuracy")
    if d is None or d.absolute is None:
        return _("not available")
    if d.noise is None:
        noise = _("noise unknown")
    else:
        noise = _("within noise ({noise})") if d.within_noise else _("beyond noise ({noise})")
        noise = noise.format(noise="±" + fmt_points(d.noise).lstrip("+"))
    return f"{fmt_delta(d, True, mark_noise=False)}, {noise}"


def cost_benefit(group: GroupSummary) -> str:
    d = group.delta
    return _(
        "best validation accuracy {change}; parameters {parameters}, GFLOPs {gflops}, time "
        "per epoch {time}, latency {latency}"
    ).format(
        change=accuracy_change(group),
        parameters=fmt_relative(d.get("num_parameters")),
        gflops=fmt_relative(d.get("gflops")),
        time=fmt_relative(d.get("mean_epoch_seconds")),
        latency=fmt_relative(d.get("inference_ms")),
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
        "## " + _("Data"),
        "",
        _("{images} images in {classes} classes (default split shown).").format(
            images=dataset.get("num_images", MISSING), classes=len(dataset.get("classes") or [])
        ),
        "",
        markdown_table([_("class"), _("train"), _("validation"), _("total")], rows),
    ]
    skipped = dataset.get("skipped") or []
    if skipped:
        lines += ["", _("{count} file(s) skipped:").format(count=len(skipped)), ""]
        lines += [f"- `{s.get('file', s.get('path'))}`: {s.get('reason')}" for s in skipped]
    return "\n".join(lines)


def _configuration_section(comparison: Comparison) -> str:
    shared = comparison.shared_hyperparameters
    rows = [[f"`{k}`", f"`{v}`"] for k, v in shared.items()]
    lines = [
        "## " + _("Training configuration"),
        "",
        _("Settings shared by every job:"),
        "",
        markdown_table([_("setting"), _("value")], rows),
    ]
    if comparison.differing:
        lines += [
            "",
            _("Settings that differ between jobs: {settings}.").format(
                settings=", ".join(f"`{k}`" for k in comparison.differing)
            ),
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
    header = [_("model"), _("architecture"), _("options beyond the architecture's own"), _("seeds")]
    lines += ["", markdown_table(header, models)]
    return "\n".join(lines)


def _fairness_section(comparison: Comparison) -> str:
    return "\n".join(["## " + _("Fair comparison"), "", *fairness_lines(comparison)])


# --- per model ------------------------------------------------------------------------------


def _curve(label: str, epochs: Sequence[EpochMetrics]) -> Curve:
    return Curve(label=label, epochs=epochs)


def _per_model_section(study: StudyData, figures: dict[str, Figure]) -> str:
    comparison = study.comparison
    rows = {r.job_id: r for r in comparison.rows}
    lines = ["## " + _("Results per model")]
    for group in comparison.groups:
        name = f"curves-{slug(group.label)}.png"
        runs = [rows[i] for i in group.job_ids]
        curves = [
            _curve(seed_label(r) if len(runs) > 1 else r.label, study.epochs.get(r.job_id, []))
            for r in runs
        ]
        figures[name] = curves_figure(curves, title=group.label)
        lines += [
            "",
            f"### {group.label}",
            "",
            f"![{curves_alt(group.label)}]({name})",
            "",
            model_summary_table(group),
        ]
        if len(runs) > 1:
            lines += ["", _runs_table(runs)]
        else:
            lines += ["", epochs_table(study.epochs.get(runs[0].job_id, []))]
    return "\n".join(lines)


def seed_label(row: ComparisonRow) -> str:
    return _("seed {seed}").format(seed=row.seed)


def curves_alt(label: str) -> str:
    return _("{model} curves").format(model=label)


def model_summary_table(group: GroupSummary) -> str:
    reference = REFERENCE_STUDY.get(group.architecture) if not group.explicit_options else None
    s = group.stats
    values: list[tuple[str, str, str, Callable[..., str] | None]] = [
        (
            N_("best validation accuracy"),
            stat_percent(s["best_val_accuracy"]),
            "best_val_accuracy",
            fmt_percent,
        ),
        (N_("test accuracy (held out)"), stat_percent(s["test_accuracy"]), "", None),
        (
            N_("final validation accuracy"),
            stat_percent(s["final_val_accuracy"]),
            "final_val_accuracy",
            fmt_percent,
        ),
        (
            N_("final training accuracy"),
            stat_percent(s["final_train_accuracy"]),
            "final_train_accuracy",
            fmt_percent,
        ),
        (
            N_("final validation loss"),
            stat_number(s["final_val_loss"]),
            "final_val_loss",
            fmt_number,
        ),
        (
            N_("final training loss"),
            stat_number(s["final_train_loss"]),
            "final_train_loss",
            fmt_number,
        ),
        (N_("parameters"), fmt_params(s["num_parameters"].mean), "num_parameters", fmt_params),
        (N_("GFLOPs per image"), fmt_number(s["gflops"].mean, 2), "gflops", fmt_number),
        (N_("seconds per epoch (wall)"), stat_number(s["mean_epoch_seconds"], 1), "", None),
        (N_("CPU seconds per epoch"), stat_number(s["mean_epoch_cpu_seconds"], 1), "", None),
        (N_("inference latency (ms / image, CPU)"), stat_number(s["inference_ms"], 1), "", None),
    ]
    header = [_("metric"), _("this study ({runs})").format(runs=_runs(group))]
    if reference:
        header.append(_("reference study reported (224 px, 5 classes, 8 epochs)"))
    rows = []
    for name, ours, key, fmt in values:
        row = [_(name), ours]
        if reference:
            row.append(fmt(reference[key]) if fmt and key in reference else MISSING)
        rows.append(row)
    return markdown_table(header, rows)


def _runs(group: GroupSummary) -> str:
    count = len(group.job_ids)
    if count == 1:
        return _("1 run")
    return ngettext("mean ± std of {count} run", "mean ± std of {count} runs", count).format(
        count=count
    )


def _runs_table(runs: Sequence[ComparisonRow]) -> str:
    header = [
        _("job"),
        _("seed"),
        _("best val acc (epoch)"),
        _("test acc"),
        _("final train acc"),
        _("final val acc"),
        _("final train loss"),
        _("final val loss"),
    ]
    rows = [
        [
            r.job_id,
            r.seed,
            f"{fmt_percent(r.best_val_accuracy)} ({r.best_epoch})",
            fmt_percent(r.test_accuracy),
            fmt_percent(r.final_train_accuracy),
            fmt_percent(r.final_val_accuracy),
            fmt_number(r.final_train_loss),
            fmt_number(r.final_val_loss),
        ]
        for r in runs
    ]
    return markdown_table(header, rows)


def epochs_table(epochs: Sequence[EpochMetrics]) -> str:
    header = [
        _("epoch"),
        _("train loss"),
        _("train acc"),
        _("val loss"),
        _("val acc"),
        _("lr"),
        _("seconds"),
        _("train img/s"),
    ]
    rows = [
        [
            f"**{m.epoch}**" if m.is_best else m.epoch,
            fmt_number(m.train_loss),
            fmt_percent(m.train_accuracy),
            fmt_number(m.val_loss),
            fmt_percent(m.val_accuracy),
            number(m.lr, ".2g"),
            fmt_number(m.epoch_seconds, 1),
            fmt_number(m.train_images_per_second, 1),
        ]
        for m in sorted(epochs, key=lambda m: m.epoch)
    ]
    return markdown_table(header, rows) + "\n\n" + _("Bold: the epoch the engine kept as best.")


# --- gradient flow ---------------------------------------------------------------------------


def first_runs(study: StudyData) -> list[tuple[str, list[EpochMetrics]]]:
    """Each model's label and the epochs of its first run."""
    return [(g.label, study.epochs.get(g.job_ids[0], [])) for g in study.comparison.groups]


def has_gradients(runs: Sequence[tuple[str, Sequence[EpochMetrics]]]) -> bool:
    return any(m.grad_norms for _label, epochs in runs for m in epochs)


def end_to_end_ratio(epochs: Sequence[EpochMetrics], stages: Sequence[str], which: int) -> str:
    """First stage's gradient norm over the last stage's, in epoch `which` (0 first, -1 last)."""
    ordered = sorted(epochs, key=lambda m: m.epoch)
    norms = ordered[which].grad_norms if ordered else {}
    return _ratio(norms.get(stages[0]), norms.get(stages[-1]))


def gradient_flow(study: StudyData, figures: dict[str, Figure]) -> list[str]:
    """The gradient-flow figure of every model's first run; returns its stage names."""
    runs = first_runs(study)
    figures["gradient-flow.png"] = gradient_flow_figure([_curve(n, e) for n, e in runs])
    return stages_of([_curve(n, e) for n, e in runs])


def _gradient_section(study: StudyData, figures: dict[str, Figure]) -> str:
    runs = first_runs(study)
    if not has_gradients(runs):
        return ""
    lines = [
        "## " + _("Gradient flow"),
        "",
        _(
            "Mean L2 norm of each stage's gradient over an epoch (first run of each model), "
            "from the input (stem) to the output (classifier). Vanishing gradients would show "
            "as norms falling towards the stem; *stem / classifier* is the ratio of the two ends."
        ),
        "",
        "![" + _("gradient flow") + "](gradient-flow.png)",
    ]
    stages = gradient_flow(study, figures)
    rows = []
    for label, epochs in runs:
        ordered = sorted(epochs, key=lambda m: m.epoch)
        for when, metrics in ((_("first"), ordered[:1]), (_("last"), ordered[-1:])):
            norms = metrics[0].grad_norms if metrics else {}
            ratio = _ratio(norms.get(stages[0]), norms.get(stages[-1]))
            rows.append([label, when] + [_norm(norms.get(s)) for s in stages] + [ratio])
        name = f"gradients-{slug(label)}.png"
        figures[name] = gradients_figure(_curve(label, epochs))
        lines += ["", "![" + _("{model} gradients").format(model=label) + f"]({name})"]
    header = [_("model"), _("epoch"), *stages, f"{stages[0]} / {stages[-1]}"]
    lines += ["", markdown_table(header, rows)]
    return "\n".join(lines)


def _norm(value: float | None) -> str:
    return MISSING if value is None else number(value, ".3g")


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return (
        MISSING if numerator is None or not denominator else number(numerator / denominator, ".3g")
    )


# --- comparisons -----------------------------------------------------------------------------


def _baseline_section(comparison: Comparison, baseline_job_id: int) -> str:
    if baseline_job_id not in comparison.job_ids:
        return ""
    rebased = rebase(comparison, baseline_job_id)
    label = groups_by_job(rebased)[baseline_job_id].label
    return "\n".join(
        [
            "## " + _("Comparison against {model}").format(model=label),
            "",
            _(
                "Each cell: value (difference to {model}: absolute, relative). Accuracy "
                "differences are in percentage points (pp); *≈ noise* marks a difference within "
                "two standard errors (see *Noise*)."
            ).format(model=label),
            "",
            delta_table(rebased),
        ]
    )


def _all_models_section(study: StudyData, figures: dict[str, Figure]) -> str:
    comparison = study.comparison
    figures["curves-all.png"] = curves_figure(
        [_curve(r.label, study.epochs.get(r.job_id, [])) for r in comparison.rows],
        title=_("All models"),
    )
    return "\n".join(
        [
            "## " + _("Comparison of all models"),
            "",
            "![" + _("all models") + "](curves-all.png)",
            "",
            groups_table(comparison.groups),
            "",
            _("Every job:"),
            "",
            jobs_table(comparison),
        ]
    )


def tradeoff_points(
    groups: Sequence[GroupSummary],
    accuracy: str = "best_val_accuracy",
    time_field: str = "mean_epoch_seconds",
) -> list[TradeoffPoint]:
    return [
        TradeoffPoint(
            label=g.label,
            accuracy=g.stats[accuracy].mean,
            accuracy_std=g.stats[accuracy].std,
            parameters=_whole(g.stats["num_parameters"].mean),
            gflops=g.stats["gflops"].mean,
            epoch_seconds=g.stats[time_field].mean,
            latency_ms=g.stats["inference_ms"].mean,
        )
        for g in groups
    ]


def tradeoff_table(
    points: Sequence[TradeoffPoint],
    accuracy_header: str = N_("best val acc"),
    time_header: str = N_("s / epoch"),
) -> str:
    header = [
        _("model"),
        _(accuracy_header),
        _("params"),
        _("GFLOPs"),
        _(time_header),
        _("latency ms"),
        _("Pareto-optimal for"),
    ]
    rows = [
        [
            p.label,
            fmt_percent(p.accuracy, p.accuracy_std),
            fmt_params(p.parameters),
            fmt_number(p.gflops, 2),
            fmt_number(p.epoch_seconds, 1),
            fmt_number(p.latency_ms, 1),
            ", ".join(_(cost) for cost in pareto_costs(p, points)) or MISSING,
        ]
        for p in points
    ]
    return markdown_table(header, rows)


def _tradeoff_section(study: StudyData, figures: dict[str, Figure]) -> str:
    accuracy, accuracy_words = result_metric(study.comparison)
    time_field, time_words = cost_time_metric(study.comparison)
    points = tradeoff_points(study.comparison.groups, accuracy, time_field)
    figures["tradeoff.png"] = tradeoff_figure(points, accuracy_words, time_words)
    cpu = time_field == "mean_epoch_cpu_seconds"
    loads = [r.mean_load_average for r in study.comparison.rows if r.mean_load_average is not None]
    text = [
        _(
            "{accuracy} against what it costs. A model is *Pareto-optimal* for a cost when no "
            "other model is at least as accurate and at most as costly (and better in one)."
        ).format(accuracy=_(accuracy_words).capitalize()),
        _(
            "Training time is **CPU seconds per epoch**: the CPU time the training process "
            "spent, which other work on the machine barely changes (wall seconds are in the "
            "tables above)."
        )
        if cpu
        else _(
            "Training time is **wall seconds per epoch**: other work on the machine inflates it, "
            "so compare it only between runs made under the same conditions."
        ),
        _(
            "Latency is the median of many timed single-image forward passes on the CPU after "
            "warm-up, a wall-clock figure that the median keeps from most interruptions."
        ),
    ]
    if loads:
        text.append(
            _("The 1-minute load average during the epochs was {low}-{high}.").format(
                low=number(min(loads), ".1f"), high=number(max(loads), ".1f")
            )
        )
    return "\n".join(
        [
            "## " + _("Trade-offs"),
            "",
            " ".join(text),
            "",
            "![" + _("trade-offs") + "](tradeoff.png)",
            "",
            tradeoff_table(
                points,
                N_("test acc") if accuracy == "test_accuracy" else N_("best val acc"),
                N_("CPU s / epoch") if cpu else N_("s / epoch"),
            ),
        ]
    )


COST_NAMES = {
    "parameters": N_("params"),
    "gflops": N_("GFLOPs"),
    "epoch_seconds": N_("time"),
    "latency_ms": N_("latency"),
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
    return "\n".join(["## " + _("Noise"), "", noise_text(n, se, repeats)])


def noise_text(n: int, se: float, repeats: int) -> str:
    """What one validation image and the binomial standard error are worth, in words."""
    text = _(
        "The validation set has {n} images, so one image is {image} percentage points and the "
        "binomial standard error of an accuracy near {half} is ±{se} pp. Differences smaller "
        "than two standard errors of the difference are marked *≈ noise*."
    ).format(n=n, image=number(100 / n, ".1f"), se=number(100 * se, ".1f"), half="50%")
    text += " " + (
        _("With {repeats} runs per model the standard errors come from the spread over seeds.")
        if repeats > 1
        else _(
            "Each model ran once, so the error covers only the finite validation set, not the "
            "seed; `--repeats` measures that too."
        )
    ).format(repeats=repeats)
    return text


def _jobs_section(comparison: Comparison) -> str:
    rows = [
        [r.job_id, r.label, r.status, r.seed, r.epochs_run, r.device or MISSING]
        for r in comparison.rows
    ]
    return "\n".join(
        [
            "## " + _("Jobs"),
            "",
            markdown_table(
                [_("job"), _("model"), _("status"), _("seed"), _("epochs"), _("device")], rows
            ),
        ]
    )


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)
