"""The study report in the course's own shape ("Tugas Eksplorasi"): Tahap 1, 2 and 3, numbered.

Stage 1 is the plain network, stage 2 ResNet-34 against it, stage 3 each further model as a
modification of ResNet-34 (3.1 which, 3.2 why, one section per modification, then all models
and the trade-offs), then the references of the papers behind the networks used. Tables and
figures are numbered in order (Tabel 1 the hyperparameters, Gambar 1 and 2 the two baselines'
curves, ...). The numbers come from `analysis.report`'s tables and sentences, so this report
and the English one state the same things; the section on the authors' own use of AI
assistants is theirs to write and is left out, saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from analysis.compare import Comparison, GroupSummary, accuracy_standard_error, rebase
from analysis.formatting import (
    MISSING,
    fmt_number,
    fmt_params,
    fmt_percent,
    fmt_relative,
    markdown_table,
    slug,
)
from analysis.i18n import N_, _, number
from analysis.modifications import PAPERS, Change, changes_of, papers_of
from analysis.plots import Curve, curves_figure, tradeoff_figure
from analysis.renderers import delta_table, fairness_lines, groups_table
from analysis.report import (
    StudyData,
    accuracy_change,
    all_within_noise,
    cost_benefit,
    degradation_sentence,
    end_to_end_ratio,
    first_runs,
    gradient_flow,
    groups_by_job,
    has_gradients,
    highest_accuracy_sentence,
    model_summary_table,
    noise_text,
    pareto_costs,
    title_and_provenance,
    tradeoff_points,
    tradeoff_table,
)
from analysis.source_excerpts import excerpt

NAME = "tugas-eksplorasi"
RESIDUAL_CODE = ("models/resnet.py:BasicBlock.forward", "models/resnet.py:make_downsample")

# Hyperparameters a student would explain in Tabel 1 (others are listed without a description).
HYPERPARAMETER_NAMES = {
    "epochs": N_("epochs"),
    "lr": N_("learning rate"),
    "batch_size": N_("training batch size"),
    "eval_batch_size": N_("validation batch size"),
    "optimizer": N_("optimiser"),
    "momentum": N_("momentum"),
    "nesterov": N_("Nesterov momentum"),
    "weight_decay": N_("weight decay"),
    "scheduler": N_("learning-rate schedule"),
    "warmup_epochs": N_("warm-up epochs"),
    "label_smoothing": N_("label smoothing"),
    "grad_clip": N_("gradient clipping (max norm)"),
    "image_size": N_("image size (pixels)"),
    "augmentation": N_("data augmentation"),
    "val_fraction": N_("validation fraction"),
    "test_fraction": N_("test fraction"),
    "split_seed": N_("seed of the split"),
    "seed": N_("seed"),
    "precision": N_("numeric precision"),
    "step_size": N_("epochs between learning-rate steps"),
    "gamma": N_("learning-rate step factor"),
    "early_stopping_patience": N_("early-stopping patience (epochs)"),
    "num_workers": N_("data-loader processes"),
    "pretrained_weights": N_("pretrained weights"),
    "compile": N_("torch.compile"),
    "device": N_("device"),
}


@dataclass
class Numbering:
    """Tables and figures numbered in the order they appear, as the course asks."""

    tables: int = 0
    figures: int = 0

    def table(self, caption: str) -> str:
        self.tables += 1
        return "**" + _("Table {n}.").format(n=self.tables) + f"** {caption}"

    def figure(self, file_name: str, caption: str) -> str:
        self.figures += 1
        label = _("Figure {n}.").format(n=self.figures)
        return f"![{label} {caption}]({file_name})\n\n*{label} {caption}*"


@dataclass
class Writer:
    study: StudyData
    figures: dict[str, Figure] = field(default_factory=dict)
    numbering: Numbering = field(default_factory=Numbering)
    papers: list[str] = field(default_factory=list)  # keys, in order of first citation

    def cite(self, keys: Sequence[str]) -> str:
        for key in keys:
            if key not in self.papers:
                self.papers.append(key)
        return "; ".join(PAPERS[key].cite() for key in keys)

    def group_curves(self, group: GroupSummary) -> str:
        name = f"curves-{slug(group.label)}.png"
        rows = {r.job_id: r for r in self.study.comparison.rows}
        runs = [rows[i] for i in group.job_ids]
        curves = [
            Curve(
                label=_("seed {seed}").format(seed=r.seed) if len(runs) > 1 else r.label,
                epochs=self.study.epochs.get(r.job_id, []),
            )
            for r in runs
        ]
        self.figures[name] = curves_figure(curves, title=group.label)
        caption = _(
            "Loss and accuracy of {model} per epoch (training dashed, validation solid, ★ the "
            "best epoch)."
        ).format(model=group.label)
        return self.numbering.figure(name, caption)


def render_report(study: StudyData) -> tuple[str, dict[str, Figure]]:
    """The Markdown text and the figures it refers to (file name -> figure)."""
    writer = Writer(study)
    comparison = study.comparison
    by_job = groups_by_job(comparison)
    baselines = [by_job[b] for b in study.baselines if b in by_job]
    if len(baselines) < 2:
        sections = [_header(study), _too_few_models(comparison)]
        return "\n\n".join(sections) + "\n", writer.figures
    plain, residual = baselines
    modifications = [g for g in comparison.groups if g.group not in {plain.group, residual.group}]
    sections = [
        _header(study),
        *_stage_one(writer, plain),
        *_stage_two(writer, plain, residual),
        *_stage_three(writer, residual, modifications),
        _(
            "*The section on the authors' own use of AI assistants is theirs to write; this "
            "report leaves it out.*"
        ),
        _references(writer),
    ]
    return "\n\n".join(s for s in sections if s) + "\n", writer.figures


def _header(study: StudyData) -> str:
    name = study.dataset.get("name")
    title = _("Exploration assignment: Plain-34, ResNet-34 and its modifications")
    return title_and_provenance(study, f"# {title}" + (f" — {name}" if name else ""))


def _too_few_models(comparison: Comparison) -> str:
    return _(
        "This template needs a plain network and ResNet-34 (the first two models of the "
        "study); these jobs have {count} model(s). Run `foodlab study --archs "
        "plain34,resnet34,se_resnet34,eca_resnet34 ...`."
    ).format(count=len(comparison.groups))


def _heading(level: int, text: str) -> str:
    return "#" * level + " " + text


# --- Tahap 1 -------------------------------------------------------------------------------


def _stage_one(writer: Writer, plain: GroupSummary) -> list[str]:
    study = writer.study
    return [
        _heading(2, _("Stage 1: the plain network ({model})").format(model=plain.label)),
        _heading(3, "1.1 " + _("Architecture")),
        _architecture_text(writer, plain),
        _heading(3, "1.2 " + _("Training configuration")),
        _configuration(writer, study.comparison),
        _heading(3, "1.3 " + _("Results")),
        writer.group_curves(plain),
        writer.numbering.table(_("Results of {model}.").format(model=plain.label)),
        model_summary_table(plain),
        _heading(3, "1.4 " + _("Analysis")),
        _plain_analysis(writer, plain),
    ]


def _size_text(group: GroupSummary, image_size: Any) -> str:
    return _(
        "It has {params} parameters and needs {gflops} GFLOPs per {size}x{size} image."
    ).format(
        params=fmt_params(group.stats["num_parameters"].mean),
        gflops=fmt_number(group.stats["gflops"].mean, 2),
        size=image_size,
    )


def _architecture_text(writer: Writer, plain: GroupSummary) -> str:
    study = writer.study
    changes = changes_of(plain.architecture, plain.options, study.architectures)
    parts = [
        _(
            "{model} has the layout of ResNet-34 ({cite}): a stem convolution, four stages "
            "of 3, 4, 6 and 3 blocks of two 3x3 convolutions with batch normalisation and ReLU, "
            "global average pooling and a linear classifier."
        ).format(model=plain.label, cite=writer.cite(("he2015",))),
        _describe(writer, changes),
        _size_text(plain, study.comparison.shared_hyperparameters.get("image_size", MISSING)),
    ]
    return "\n".join([" ".join(p for p in parts if p), "", *_code(RESIDUAL_CODE[:1])])


def _describe(writer: Writer, changes: Sequence[tuple[Change, Any]]) -> str:
    """Each change's description, its papers cited before the full stop."""
    sentences = []
    for change, value in changes:
        papers = papers_of(change, value)
        text = _(change.description)
        if papers:
            text = f"{text.rstrip('.')} ({writer.cite(papers)})."
        sentences.append(text)
    return " ".join(sentences)


def _configuration(writer: Writer, comparison: Comparison) -> str:
    dataset = writer.study.dataset
    counts = dataset.get("counts") or {}
    rows = [
        [_(HYPERPARAMETER_NAMES.get(key, key)), f"`{key}`", _value(value)]
        for key, value in comparison.shared_hyperparameters.items()
    ]
    if counts:
        for split, name in (("train", N_("training images")), ("val", N_("validation images"))):
            total = sum(int(c.get(split, 0)) for c in counts.values())
            rows.append([_(name), MISSING, str(total)])
        rows.append([_("classes"), MISSING, ", ".join(counts)])
    lines = [
        _(
            "Every model was trained with the same settings (Table 1); only the architecture "
            "differs between them."
        ),
        "",
        writer.numbering.table(_("Training hyperparameters and data.")),
        "",
        markdown_table([_("setting"), _("name"), _("value")], rows),
        "",
        *fairness_lines(comparison),
    ]
    if comparison.differing:
        lines += [
            "",
            _("Settings that differ between jobs: {settings}.").format(
                settings=", ".join(f"`{k}`" for k in comparison.differing)
            ),
        ]
    return "\n".join(lines)


def _value(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, float):
        return number(value, "g")
    return f"`{value}`" if isinstance(value, str) else str(value)


def _plain_analysis(writer: Writer, plain: GroupSummary) -> str:
    study = writer.study
    s = plain.stats
    classes = len(study.dataset.get("classes") or []) or None
    text = _(
        "After {epochs} epochs {model} reaches a training accuracy of {train} (final training "
        "loss {loss}) and a best validation accuracy of {best}; its final validation accuracy "
        "is {final}."
    ).format(
        epochs=study.comparison.shared_hyperparameters.get("epochs", MISSING),
        model=plain.label,
        train=fmt_percent(s["final_train_accuracy"].mean, s["final_train_accuracy"].std),
        loss=fmt_number(s["final_train_loss"].mean, 3, s["final_train_loss"].std),
        best=fmt_percent(s["best_val_accuracy"].mean, s["best_val_accuracy"].std),
        final=fmt_percent(s["final_val_accuracy"].mean, s["final_val_accuracy"].std),
    )
    best = s["best_val_accuracy"].mean
    if classes and best is not None and plain.val_size:
        chance = 1 / classes
        margin = 2 * (accuracy_standard_error(chance, plain.val_size) or 0.0)
        message = (
            _(
                "With {classes} classes guessing gives {chance}; the best validation accuracy is "
                "within two standard errors ({margin}) of that."
            )
            if abs(best - chance) <= margin
            else _(
                "With {classes} classes guessing gives {chance}; the best validation accuracy "
                "is more than two standard errors ({margin}) from that."
            )
        )
        text += " " + message.format(
            classes=classes, chance=fmt_percent(chance), margin="±" + fmt_percent(margin)
        )
    return text


# --- Tahap 2 -------------------------------------------------------------------------------


def _stage_two(writer: Writer, plain: GroupSummary, residual: GroupSummary) -> list[str]:
    study = writer.study
    versus_plain = rebase(study.comparison, plain.job_ids[0])
    pair = versus_plain.model_copy(
        update={
            "groups": [g for g in versus_plain.groups if g.group in {plain.group, residual.group}]
        }
    )
    residual_vs_plain = groups_by_job(versus_plain)[residual.job_ids[0]]
    return [
        _heading(2, _("Stage 2: {model}").format(model=residual.label)),
        _heading(3, "2.1 " + _("The architectural change")),
        _residual_change(writer, plain, residual, residual_vs_plain),
        _heading(3, "2.2 " + _("Results")),
        writer.group_curves(residual),
        writer.numbering.table(_("Results of {model}.").format(model=residual.label)),
        model_summary_table(residual),
        _heading(
            3,
            "2.3 "
            + _("Comparison of {plain} and {residual}").format(
                plain=plain.label, residual=residual.label
            ),
        ),
        writer.numbering.table(
            _(
                "{residual} against {plain}: value (difference to {plain}: absolute, relative). "
                "Accuracy differences are in percentage points; *≈ noise* marks a difference "
                "within two standard errors."
            ).format(residual=residual.label, plain=plain.label)
        ),
        delta_table(pair),
        _heading(3, "2.4 " + _("Critical analysis")),
        _critical_analysis(writer, plain, residual, residual_vs_plain),
    ]


def _residual_change(
    writer: Writer, plain: GroupSummary, residual: GroupSummary, versus: GroupSummary
) -> str:
    text = _(
        "{residual} adds each block's input to its output: an identity shortcut, or a 1x1 "
        "convolution with batch normalisation where the number of channels or the resolution "
        "changes ({cite}). The block learns a residual on top of the identity instead of the "
        "whole mapping. Parameters: {params} against {plain_params} for {plain} ({relative})."
    ).format(
        residual=residual.label,
        plain=plain.label,
        cite=writer.cite(("he2015",)),
        params=fmt_params(residual.stats["num_parameters"].mean),
        plain_params=fmt_params(plain.stats["num_parameters"].mean),
        relative=fmt_relative(versus.delta.get("num_parameters")),
    )
    image_size = writer.study.comparison.shared_hyperparameters.get("image_size", MISSING)
    return "\n".join([text + " " + _size_text(residual, image_size), "", *_code(RESIDUAL_CODE)])


def _critical_analysis(
    writer: Writer, plain: GroupSummary, residual: GroupSummary, versus: GroupSummary
) -> str:
    study = writer.study
    lines = [
        "- " + degradation_sentence(plain, residual),
        "- "
        + _("Best validation accuracy of {model} against {baseline}: {change}.").format(
            model=residual.label, baseline=plain.label, change=accuracy_change(versus)
        ),
    ]
    runs = [
        (label, epochs)
        for label, epochs in first_runs(study)
        if label in (plain.label, residual.label)
    ]
    if has_gradients(runs):
        stages = gradient_flow(study, writer.figures)
        ratios = {label: end_to_end_ratio(epochs, stages, 0) for label, epochs in runs}
        lines.append(
            "- "
            + _(
                "In the first epoch the gradient at the input ({first}) is {plain_ratio} times "
                "the gradient at the output ({last}) in {plain}, and {residual_ratio} times in "
                "{residual} (Figure {figure})."
            ).format(
                first=stages[0],
                last=stages[-1],
                plain=plain.label,
                residual=residual.label,
                plain_ratio=ratios.get(plain.label, MISSING),
                residual_ratio=ratios.get(residual.label, MISSING),
                figure=writer.numbering.figures + 1,
            )
        )
    lines.append("- " + _noise(study.comparison))
    if has_gradients(runs):
        caption = _(
            "Mean gradient norm per stage, from the input (stem) to the output (classifier), "
            "for the first run of each model."
        )
        lines += ["", writer.numbering.figure("gradient-flow.png", caption)]
    return "\n".join(lines)


def _noise(comparison: Comparison) -> str:
    sizes = {r.val_size for r in comparison.rows if r.val_size}
    if not sizes:
        return _("The validation set size is unknown, so the noise cannot be estimated.")
    n = min(sizes)
    repeats = max(len(g.job_ids) for g in comparison.groups)
    return noise_text(n, accuracy_standard_error(0.5, n) or 0.0, repeats)


# --- Tahap 3 -------------------------------------------------------------------------------


def _stage_three(
    writer: Writer, residual: GroupSummary, modifications: Sequence[GroupSummary]
) -> list[str]:
    heading = _heading(2, _("Stage 3: modifications of {model}").format(model=residual.label))
    if not modifications:
        return [
            heading,
            _(
                "This study has no modification of {model}, so sections 3.3 to 3.6 are left "
                "out. Add two, e.g. `foodlab study --archs plain34,resnet34,se_resnet34,"
                "eca_resnet34 ...` (the first two are the baselines), or report on their jobs "
                "together with these: `foodlab study --jobs ...`."
            ).format(model=residual.label),
        ]
    study = writer.study
    versus = groups_by_job(rebase(study.comparison, residual.job_ids[0]))
    changes = {
        g.group: changes_of(g.architecture, g.options, study.architectures) for g in modifications
    }
    sections = [
        heading,
        _heading(3, "3.1 " + _("The modifications chosen")),
        "\n".join(_chosen(writer, g, changes[g.group]) for g in modifications),
        _heading(3, "3.2 " + _("Why these modifications")),
        "\n".join(_why(g, changes[g.group]) for g in modifications),
    ]
    for index, group in enumerate(modifications, start=1):
        number_ = f"3.{2 + index}"
        sections += _modification(
            writer, number_, index, group, residual, changes[group.group], versus
        )
    last = 2 + len(modifications)
    sections += [
        _heading(3, f"3.{last + 1} " + _("Comparison of all models")),
        *_all_models(writer),
        _heading(3, f"3.{last + 2} " + _("Trade-off analysis")),
        *_tradeoffs(writer),
    ]
    return sections


def _change_titles(changes: Sequence[tuple[Change, Any]]) -> str:
    return ", ".join(_(c.title) for c, _v in changes) or _("no change of the registry's options")


def _chosen(writer: Writer, group: GroupSummary, changes: Sequence[tuple[Change, Any]]) -> str:
    papers = [key for c, v in changes for key in papers_of(c, v)]
    cited = f" ({writer.cite(list(dict.fromkeys(papers)))})" if papers else ""
    return f"- **{group.label}**: {_change_titles(changes)}{cited}."


def _why(group: GroupSummary, changes: Sequence[tuple[Change, Any]]) -> str:
    reasons = " ".join(_(c.rationale) for c, _v in changes) or MISSING
    return f"- **{group.label}**: {reasons}"


def _modification(
    writer: Writer,
    section: str,
    index: int,
    group: GroupSummary,
    residual: GroupSummary,
    changes: Sequence[tuple[Change, Any]],
    versus: dict[int, GroupSummary],
) -> list[str]:
    mine = versus[group.job_ids[0]]
    image_size = writer.study.comparison.shared_hyperparameters.get("image_size", MISSING)
    description = _describe(writer, changes)
    cost = _("Against {model}: parameters {parameters}, GFLOPs {gflops}.").format(
        model=residual.label,
        parameters=fmt_relative(mine.delta.get("num_parameters")),
        gflops=fmt_relative(mine.delta.get("gflops")),
    )
    comparison = rebase(writer.study.comparison, residual.job_ids[0])
    pair = comparison.model_copy(
        update={
            "groups": [g for g in comparison.groups if g.group in {residual.group, group.group}]
        }
    )
    return [
        _heading(
            3, f"{section} " + _("Modification {n}: {model}").format(n=index, model=group.label)
        ),
        _heading(4, f"{section}.1 " + _("Description")),
        " ".join(p for p in (description, _size_text(group, image_size), cost) if p),
        _heading(4, f"{section}.2 " + _("Implementation")),
        "\n".join(_code(tuple(ref for c, _v in changes for ref in c.code))) or MISSING,
        _heading(4, f"{section}.3 " + _("Results")),
        writer.group_curves(group),
        writer.numbering.table(
            _("{model} against {baseline}: value (difference to {baseline}).").format(
                model=group.label, baseline=residual.label
            )
        ),
        delta_table(pair),
        _heading(4, f"{section}.4 " + _("Analysis")),
        _("Against {model}: {cost_benefit}.").format(
            model=residual.label, cost_benefit=cost_benefit(mine)
        )
        + " "
        + _fit_sentence(group, residual),
    ]


def _fit_sentence(group: GroupSummary, residual: GroupSummary) -> str:
    return _(
        "Final training accuracy {model_train} against {baseline_train}, final training loss "
        "{model_loss} against {baseline_loss}."
    ).format(
        model_train=fmt_percent(group.stats["final_train_accuracy"].mean),
        baseline_train=fmt_percent(residual.stats["final_train_accuracy"].mean),
        model_loss=fmt_number(group.stats["final_train_loss"].mean),
        baseline_loss=fmt_number(residual.stats["final_train_loss"].mean),
    )


def _all_models(writer: Writer) -> list[str]:
    study = writer.study
    comparison = study.comparison
    writer.figures["curves-all.png"] = curves_figure(
        [Curve(label=r.label, epochs=study.epochs.get(r.job_id, [])) for r in comparison.rows],
        title=_("All models"),
    )
    lines = ["- " + highest_accuracy_sentence(comparison)]
    if all_within_noise(comparison, study.baselines):
        lines.append(
            "- "
            + _(
                "None of the differences in best validation accuracy is larger than the noise: "
                "these runs do not rank the architectures. More epochs, more images or "
                "`--repeats` would."
            )
        )
    return [
        writer.numbering.figure("curves-all.png", _("Loss and accuracy of every model per epoch.")),
        writer.numbering.table(_("All models (mean ± standard deviation over runs).")),
        groups_table(comparison.groups),
        "\n".join(lines),
    ]


def _tradeoffs(writer: Writer) -> list[str]:
    points = tradeoff_points(writer.study.comparison.groups)
    writer.figures["tradeoff.png"] = tradeoff_figure(points)
    lines = []
    for point in points:
        costs = pareto_costs(point, points)
        lines.append(
            "- "
            + (
                _("**{model}** is Pareto-optimal for: {costs}.").format(
                    model=point.label, costs=", ".join(_(c) for c in costs)
                )
                if costs
                else _(
                    "**{model}** is not Pareto-optimal for any cost: for each, another model is "
                    "at least as accurate and at most as costly."
                ).format(model=point.label)
            )
        )
    lines.append(
        "- "
        + _(
            "Seconds per epoch and latency are wall-clock times on the machine that ran the "
            "jobs; other work on it inflates them, so compare them only between runs made "
            "under the same conditions."
        )
    )
    return [
        _(
            "A model is *Pareto-optimal* for a cost when no other model is at least as accurate "
            "and at most as costly (and better in one)."
        ),
        writer.numbering.figure(
            "tradeoff.png", _("Best validation accuracy against parameters, GFLOPs and time.")
        ),
        writer.numbering.table(_("Accuracy and costs of every model.")),
        tradeoff_table(points),
        "\n".join(lines),
    ]


# --- code and references ---------------------------------------------------------------------


def _code(references: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for reference in dict.fromkeys(references):
        part = excerpt(reference)
        lines += [
            _("`{name}` in `{path}`, lines {first}-{last}:").format(
                name=part.name, path=part.path, first=part.first_line, last=part.last_line
            ),
            "",
            "```python",
            part.code,
            "```",
            "",
        ]
    return lines[:-1]


def _references(writer: Writer) -> str:
    entries = [PAPERS[key].citation() for key in writer.papers]
    return "\n".join(
        [_heading(2, _("References")), "", *(f"{i}. {e}" for i, e in enumerate(entries, 1))]
    )
