"""Figures of training runs, built as matplotlib `Figure` objects and rendered to PNG bytes.

Figures are made without pyplot (no global state, safe in API threads) and rendered by the
Agg canvas. Every figure has a fixed size in pixels (no tight bounding box), so callers and
tests know what they get. Accuracies arrive as fractions and are drawn as percentages.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from analysis.i18n import N_, _, current, number
from core.specs import best_epoch

DPI = 100
CURVES_SIZE = (12.0, 4.8)  # inches: 1200 x 480 pixels
GRADIENTS_SIZE = (12.0, 4.8)
TRADEOFF_SIZE = (14.0, 4.2)
GOLDEN_RATIO_CONJUGATE = 0.618033988749895
BEST_MARKER: dict[str, Any] = {
    "marker": "*",
    "s": 160,
    "edgecolors": "black",
    "linewidths": 0.6,
    "zorder": 5,
}


class EpochLike(Protocol):
    """An epoch's metrics: `core.specs.EpochMetrics` or a `core.tables.EpochMetric` row."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    grad_norms: dict[str, float]


@dataclass(frozen=True)
class Curve:
    """One job's epochs and the text naming it in legends."""

    label: str
    epochs: Sequence[EpochLike]


@dataclass(frozen=True)
class TradeoffPoint:
    """One model (or repeat group) in the trade-off plot; None where a cost was not measured."""

    label: str
    accuracy: float | None
    accuracy_std: float | None
    parameters: int | None
    gflops: float | None
    epoch_seconds: float | None
    latency_ms: float | None


def to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def pixel_size(figure: Figure) -> tuple[int, int]:
    """(width, height) of the PNG `to_png` writes for this figure."""
    width, height = figure.get_size_inches() * figure.dpi
    return round(width), round(height)


Colour = str | tuple[float, float, float, float]  # a matplotlib colour


def _colour(index: int) -> Colour:
    """A colour per job, all distinct: matplotlib's ten defaults, then tab20's ten lighter
    shades, then hues spread by the golden ratio (a study with repeats can have many jobs)."""
    if index < 10:
        return f"C{index}"
    if index < 20:
        return colormaps["tab20"](2 * (index - 10) + 1)
    return colormaps["hsv"]((index * GOLDEN_RATIO_CONJUGATE) % 1.0)


def _sorted(epochs: Sequence[EpochLike]) -> list[EpochLike]:
    return sorted(epochs, key=lambda m: m.epoch)


# --- loss and accuracy curves ---------------------------------------------------------------


def curves_figure(curves: Sequence[Curve], title: str | None = None) -> Figure:
    """Loss and accuracy per epoch, two panels; train dashed, validation solid, best epoch ★.

    Each job gets one colour and exactly two lines per panel (train and validation).
    """
    figure = Figure(figsize=CURVES_SIZE, dpi=DPI, layout="constrained")
    loss_ax, acc_ax = figure.subplots(1, 2)
    for index, curve in enumerate(curves):
        _plot_curve(loss_ax, acc_ax, curve, _colour(index))
    loss_ax.set(title=_("Loss"), xlabel=_("epoch"), ylabel=_("cross-entropy loss"))
    _log_scale_if_spiky(loss_ax, curves)
    acc_ax.set(title=_("Accuracy"), xlabel=_("epoch"), ylabel=_("accuracy (%)"))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.margins(x=0.1, y=0.1)  # room for the best-epoch labels at the edges
        ax.xaxis.get_major_locator().set_params(integer=True)
    if curves and any(c.epochs for c in curves):
        _curve_legends(figure, acc_ax, curves)
    if title:
        figure.suptitle(title)
    return localised(figure)


def _log_scale_if_spiky(loss_ax: Axes, curves: Sequence[Curve]) -> None:
    """A log axis when losses span over two decades: one eval-mode spike (BatchNorm statistics
    lagging a high learning rate) would otherwise flatten every other curve to the floor."""
    losses = [loss for curve in curves for m in curve.epochs for loss in (m.train_loss, m.val_loss)]
    positive = [loss for loss in losses if loss > 0]
    if positive and max(positive) / min(positive) > 100:
        loss_ax.set_yscale("log")
        loss_ax.set_ylabel(_("cross-entropy loss (log scale)"))


def _plot_curve(loss_ax: Axes, acc_ax: Axes, curve: Curve, colour: Colour) -> None:
    epochs = _sorted(curve.epochs)
    x = [m.epoch for m in epochs]
    loss_ax.plot(x, [m.train_loss for m in epochs], ls="--", color=colour, label="_train")
    loss_ax.plot(x, [m.val_loss for m in epochs], ls="-", color=colour, label=curve.label)
    acc_ax.plot(x, [100 * m.train_accuracy for m in epochs], ls="--", color=colour, label="_train")
    acc_ax.plot(x, [100 * m.val_accuracy for m in epochs], ls="-", color=colour, label=curve.label)
    best = best_epoch(epochs)
    if best is not None:
        # Scatter, not plot: the marker must not count as another line of the job.
        loss_ax.scatter([best.epoch], [best.val_loss], color=colour, **BEST_MARKER)
        acc_ax.scatter([best.epoch], [100 * best.val_accuracy], color=colour, **BEST_MARKER)
        acc_ax.annotate(
            f"{number(100 * best.val_accuracy, '.1f')}% @ {best.epoch}",
            (best.epoch, 100 * best.val_accuracy),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
            color=colour,
        )


def _curve_legends(figure: Figure, acc_ax: Axes, curves: Sequence[Curve]) -> None:
    """Which colour is which job (below the panels), and what the line styles mean."""
    styles = [
        Line2D([], [], ls="--", color="grey", label=_("train")),
        Line2D([], [], ls="-", color="grey", label=_("validation")),
        Line2D([], [], ls="", color="grey", label=_("best validation accuracy"), **_star()),
    ]
    acc_ax.legend(handles=styles, loc="best", fontsize=8)
    jobs = [Line2D([], [], color=_colour(i), lw=2, label=c.label) for i, c in enumerate(curves)]
    figure.legend(handles=jobs, loc="outside lower center", ncols=min(len(jobs), 4), fontsize=9)


def _star() -> dict[str, Any]:
    return {"marker": "*", "markersize": 11, "markeredgecolor": "black"}


# --- gradient flow ---------------------------------------------------------------------------


def stages_of(curves: Sequence[Curve]) -> list[str]:
    """The stages with gradient norms, input to output: the engine records them in network
    order (models.STAGES, which analysis cannot import), so first appearance is that order."""
    return list(dict.fromkeys(stage for c in curves for m in c.epochs for stage in m.grad_norms))


def gradients_figure(curve: Curve) -> Figure:
    """Per-stage gradient norms: over the epochs (left), and along the depth per epoch (right).

    Vanishing gradients show as norms falling from the classifier towards the stem.
    """
    figure = Figure(figsize=GRADIENTS_SIZE, dpi=DPI, layout="constrained")
    time_ax, depth_ax = figure.subplots(1, 2)
    epochs = _sorted(curve.epochs)
    stages = stages_of([curve])
    for index, stage in enumerate(stages):
        points = [(m.epoch, m.grad_norms[stage]) for m in epochs if stage in m.grad_norms]
        time_ax.plot(
            *zip(*points, strict=True), marker="o", ms=3, color=_colour(index), label=stage
        )
    for position, metrics in enumerate(epochs):
        # Colour runs along viridis from the first epoch (purple) to the last (yellow).
        shade = colormaps["viridis"](position / max(len(epochs) - 1, 1))
        depth_ax.plot(
            range(len(stages)),
            [metrics.grad_norms.get(s, float("nan")) for s in stages],
            marker="o",
            ms=3,
            color=shade,
            label=_("epoch {epoch}").format(epoch=metrics.epoch),
        )
    time_ax.set(
        title=_("Gradient norm per stage"), xlabel=_("epoch"), ylabel=_("mean gradient L2 norm")
    )
    depth_ax.set(title=_("Along the depth (input → output)"), ylabel=_("mean gradient L2 norm"))
    depth_ax.set_xticks(range(len(stages)), stages, rotation=20, ha="right")
    for ax in (time_ax, depth_ax):
        if stages:
            ax.set_yscale("log")
            ax.legend(fontsize=7, ncols=2 if len(ax.lines) > 6 else 1)
        ax.grid(alpha=0.3, which="both")
    time_ax.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(_("Gradient flow: {model}").format(model=curve.label))
    return localised(figure)


def gradient_flow_figure(curves: Sequence[Curve]) -> Figure:
    """Per-stage gradient norm in the first and the last epoch, one line per job."""
    figure = Figure(figsize=GRADIENTS_SIZE, dpi=DPI, layout="constrained")
    first_ax, last_ax = figure.subplots(1, 2, sharey=True)
    stages = stages_of(curves)
    for index, curve in enumerate(curves):
        epochs = _sorted(curve.epochs)
        if not epochs:
            continue
        for ax, metrics in ((first_ax, epochs[0]), (last_ax, epochs[-1])):
            ax.plot(
                range(len(stages)),
                [metrics.grad_norms.get(s, float("nan")) for s in stages],
                marker="o",
                color=_colour(index),
                label=curve.label,
            )
    first_ax.set(title=_("First epoch"), ylabel=_("mean gradient L2 norm"))
    last_ax.set(title=_("Last epoch"))
    for ax in (first_ax, last_ax):
        ax.set_xticks(range(len(stages)), stages, rotation=20, ha="right")
        if stages:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    if curves:
        last_ax.legend(fontsize=8)
    figure.suptitle(_("Gradient flow along the depth (input → output)"))
    return localised(figure)


def localised(figure: Figure) -> Figure:
    """Tick labels of linear axes with the report language's decimal symbol ('0,5').

    English keeps matplotlib's own labels. The symbol is read now: the figure is drawn later,
    when the report's language may no longer be the active one."""
    symbol = current().decimal_symbol
    if symbol == ".":
        return figure
    formatter = FuncFormatter(lambda value, _position: format(value, "g").replace(".", symbol))
    for ax in figure.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "linear":
                axis.set_major_formatter(formatter)
    return figure


# --- accuracy against cost -------------------------------------------------------------------

COSTS = (
    ("parameters", N_("parameters (millions)"), 1e-6),
    ("gflops", N_("GFLOPs per image"), 1.0),
    ("epoch_seconds", N_("seconds per epoch"), 1.0),
    ("latency_ms", N_("inference latency (ms / image, CPU)"), 1.0),
)


def tradeoff_figure(
    points: Sequence[TradeoffPoint],
    accuracy_label: str = "best validation accuracy",
    time_label: str = "seconds per epoch",
) -> Figure:
    """Accuracy against each cost, one marker per model (± std over repeats); the labels say
    which accuracy (validation or test) and which time (wall or CPU) the points hold."""
    figure = Figure(figsize=TRADEOFF_SIZE, dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(COSTS), sharey=True)
    for ax, (attribute, xlabel, scale) in zip(axes, COSTS, strict=True):
        _tradeoff_panel(ax, points, attribute, scale)
        ax.margins(x=0.25, y=0.1)  # room for the model names beside the markers
        ax.set(xlabel=_(time_label) if attribute == "epoch_seconds" else _(xlabel))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(_("{accuracy} (%)").format(accuracy=_(accuracy_label)))
    figure.suptitle(_("Accuracy against cost (up and to the left is better)"))
    return localised(figure)


def _tradeoff_panel(
    ax: Axes, points: Sequence[TradeoffPoint], attribute: str, scale: float
) -> None:
    drawn = 0
    for index, point in enumerate(points):
        cost = getattr(point, attribute)
        if cost is None or point.accuracy is None:
            continue
        x, y = cost * scale, 100 * point.accuracy
        error = 100 * point.accuracy_std if point.accuracy_std is not None else None
        ax.errorbar([x], [y], yerr=error, fmt="o", ms=8, capsize=4, color=_colour(index))
        ax.annotate(point.label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, _("not measured"), transform=ax.transAxes, ha="center", color="grey")
