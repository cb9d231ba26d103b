"""Refusals that name the field, and the pure pieces of the loop (best epoch, schedules)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_testlib import tiny_spec

from core.specs import ArchitectureSpec, EpochMetrics, SpecError, resolve_hyperparameters
from models import ARCHITECTURES, build_model, stage_grad_norms
from tests.support import per_architecture
from workers.engine import train
from workers.engine.grad_norms import StageGradNorms
from workers.engine.optim import lr_factor
from workers.engine.run import _best_epoch, _patience_exhausted


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lr": 0}, "hyperparameters.lr"),
        ({"batch_size": 0}, "hyperparameters.batch_size"),
        ({"optimizer": "rmsprop"}, "hyperparameters.optimizer"),
        ({"scheduler": "linear"}, "hyperparameters.scheduler"),
        ({"label_smoothing": 1.0}, "hyperparameters.label_smoothing"),
        ({"grad_clip": -1}, "hyperparameters.grad_clip"),
        ({"early_stopping_patience": 0}, "hyperparameters.early_stopping_patience"),
        ({"image_size": 8}, "hyperparameters.image_size"),
        ({"augmentation": "extreme"}, "hyperparameters.augmentation"),
        ({"learning_rate": 0.1}, "hyperparameters.learning_rate"),
    ],
)
def test_bad_hyperparameters_name_the_field(overrides: dict, field: str):
    with pytest.raises(SpecError) as error:
        resolve_hyperparameters("reference", overrides)
    assert error.value.field == field


def test_cross_field_rules_explain_themselves():
    with pytest.raises(SpecError, match="warmup_epochs must be smaller than epochs"):
        resolve_hyperparameters("reference", {"epochs": 2, "warmup_epochs": 2})
    with pytest.raises(SpecError, match="nesterov needs optimizer 'sgd'"):
        resolve_hyperparameters("reference", {"optimizer": "adam", "nesterov": True})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"architecture": ArchitectureSpec(name="vgg")}, "architecture.name"),
        (
            {"architecture": ArchitectureSpec(name="resnet34", options={"attn": "x"})},
            "architecture.options.attn",
        ),
        (
            {"hyperparameters": tiny_spec(pretrained_weights="/no/such.pth").hyperparameters},
            "hyperparameters.pretrained_weights",
        ),
    ],
)
def test_train_refuses_bad_specs_before_training(
    synth_data: Path, tmp_path: Path, change: dict, field: str
):
    with pytest.raises(SpecError) as error:
        train(
            tiny_spec().model_copy(update=change),
            synth_data,
            tmp_path / "run",
            cache_dir=tmp_path / "cache",
        )
    assert error.value.field == field
    assert not (tmp_path / "run" / "last.pt").exists()


def _metrics(epoch: int, accuracy: float, loss: float) -> EpochMetrics:
    return EpochMetrics(
        epoch=epoch,
        train_loss=1,
        train_accuracy=0.5,
        val_loss=loss,
        val_accuracy=accuracy,
        lr=0.1,
        epoch_seconds=1,
        train_images_per_second=1,
        generalization_gap=0,
    )


def test_best_epoch_breaks_accuracy_ties_by_lower_loss():
    history = [
        _metrics(1, 0.5, 1.0),
        _metrics(2, 0.7, 0.9),
        _metrics(3, 0.7, 0.8),
        _metrics(4, 0.6, 0.1),
    ]
    assert _best_epoch(history) == 3
    assert _best_epoch([]) is None


def test_patience_counts_epochs_since_the_best():
    history = [_metrics(1, 0.5, 1.0), _metrics(2, 0.7, 0.9), _metrics(3, 0.6, 0.8)]
    assert not _patience_exhausted(history, None)
    assert _patience_exhausted(history, 1)
    assert not _patience_exhausted(history, 2)


def test_learning_rate_schedules():
    def factors(**overrides: object) -> list[float]:
        hp = resolve_hyperparameters("reference", {"epochs": 4} | overrides)
        return [lr_factor(step, hp, steps_per_epoch=10) for step in range(40)]

    assert set(factors()) == {1.0}
    warm_cosine = factors(scheduler="cosine", warmup_epochs=1)
    assert warm_cosine[0] == pytest.approx(0.1) and warm_cosine[9] == 1.0
    assert warm_cosine[10] == 1.0 and warm_cosine[-1] < 0.01
    assert all(a >= b for a, b in zip(warm_cosine[10:], warm_cosine[11:], strict=False))
    step = factors(scheduler="step", step_size=2, gamma=0.5)
    assert step[19] == 1.0 and step[20] == 0.5
    onecycle = factors(scheduler="onecycle")
    assert onecycle[0] == pytest.approx(1 / 25) and max(onecycle) == pytest.approx(1.0, 1e-3)
    assert onecycle[-1] < 0.01


@pytest.mark.parametrize("name", per_architecture(sorted(ARCHITECTURES)))
def test_stage_norms_match_models(name: str):
    """The engine's on-device stage norms group parameters as models.stage_grad_norms does."""
    torch.manual_seed(0)
    model = build_model(name, 3)
    model(torch.randn(2, 3, 32, 32)).logsumexp(dim=1).sum().backward()
    norms = StageGradNorms(model)
    norms.add()
    expected = stage_grad_norms(model)
    assert norms.mean() == pytest.approx(expected, rel=1e-4)  # float32 sums, other order
