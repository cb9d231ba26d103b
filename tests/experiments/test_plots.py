"""Figures: the lines each job gets, and PNGs that decode to the promised size."""

from __future__ import annotations

import io

from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba
from PIL import Image

from analysis.plots import (
    Curve,
    TradeoffPoint,
    curves_figure,
    gradient_flow_figure,
    gradients_figure,
    pixel_size,
    to_png,
    tradeoff_figure,
)
from core.specs import EpochMetrics
from models import STAGES


def epochs(accuracies: list[float]) -> list[EpochMetrics]:
    return [
        EpochMetrics(
            epoch=i + 1,
            train_loss=2 - i / 10,
            train_accuracy=acc + 0.1,
            val_loss=1.9,
            val_accuracy=acc,
            lr=1e-3,
            epoch_seconds=1.0,
            train_images_per_second=10.0,
            generalization_gap=0.1,
            grad_norms={stage: 0.1 * (k + 1) for k, stage in enumerate(STAGES)},
        )
        for i, acc in enumerate(accuracies)
    ]


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()  # raises on a truncated or corrupt file
    return image


def test_overlaid_curves_have_one_validation_and_one_train_line_per_job() -> None:
    curves = [
        Curve("plain34", epochs([0.2, 0.3, 0.25])),
        Curve("resnet34", epochs([0.3, 0.5])),
        Curve("se_resnet34", epochs([0.1, 0.2, 0.3, 0.4])),
    ]
    figure = curves_figure(curves)
    loss_ax, acc_ax = figure.axes
    for ax in (loss_ax, acc_ax):
        assert [line.get_label() for line in ax.lines if line.get_linestyle() == "-"] == [
            "plain34",
            "resnet34",
            "se_resnet34",
        ]
        assert len(ax.lines) == 2 * len(curves)
        # One best-epoch star per job, and the same colour as the job's lines.
        stars = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(stars) == len(curves)
    best = acc_ax.lines[3]  # resnet34's validation accuracy, in percent
    assert list(best.get_ydata()) == [30.0, 50.0]
    image = decoded(to_png(figure))
    assert image.format == "PNG" and image.size == pixel_size(figure) == (1200, 480)


def test_single_job_curves_mark_the_best_epoch() -> None:
    figure = curves_figure([Curve("job 1", epochs([0.2, 0.6, 0.4]))], title="job 1")
    star = next(c for c in figure.axes[1].collections if isinstance(c, PathCollection))
    assert star.get_offsets().tolist() == [[2.0, 60.0]]
    assert decoded(to_png(figure)).size == (1200, 480)


def test_gradients_have_one_line_per_stage() -> None:
    figure = gradients_figure(Curve("plain34", epochs([0.2, 0.3, 0.4])))
    over_epochs, along_depth = figure.axes[:2]
    assert [line.get_label() for line in over_epochs.lines] == list(STAGES)
    assert len(along_depth.lines) == 3  # one per epoch
    assert over_epochs.get_yscale() == "log"
    assert decoded(to_png(figure)).size == (1200, 480)


def test_gradient_flow_has_one_line_per_job() -> None:
    figure = gradient_flow_figure([Curve("a", epochs([0.2])), Curve("b", epochs([0.3, 0.4]))])
    assert [len(ax.lines) for ax in figure.axes[:2]] == [2, 2]


def test_tradeoff_plot_skips_unmeasured_costs() -> None:
    points = [
        TradeoffPoint("plain34", 0.3, None, 21_000_000, 3.6, 10.0, None),
        TradeoffPoint("resnet34", 0.45, 0.02, 21_300_000, 3.6, 11.0, None),
    ]
    figure = tradeoff_figure(points)
    assert len(figure.axes) == 4
    assert "not measured" in [t.get_text() for t in figure.axes[3].texts]
    assert decoded(to_png(figure)).size == pixel_size(figure)


def test_loss_axis_turns_logarithmic_only_for_spikes() -> None:
    calm = curves_figure([Curve("calm", epochs([0.2, 0.3]))])
    assert calm.axes[0].get_yscale() == "linear"
    spiky_epochs = epochs([0.2, 0.3, 0.4])
    spiky_epochs[1] = spiky_epochs[1].model_copy(update={"val_loss": 900.0})
    spiky = curves_figure([Curve("calm", epochs([0.2, 0.3])), Curve("spiky", spiky_epochs)])
    assert spiky.axes[0].get_yscale() == "log"


def test_every_job_of_a_large_study_gets_its_own_colour() -> None:
    curves = [Curve(f"job {i}", epochs([0.2, 0.3])) for i in range(30)]
    validation = [line for line in curves_figure(curves).axes[1].lines if line.get_ls() == "-"]
    colours = {to_rgba(line.get_color()) for line in validation}
    assert len(validation) == len(colours) == 30
