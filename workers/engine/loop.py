"""One epoch of training, one pass of evaluation. Progress leaves through callbacks only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.specs import BestEpochDetails, SpecError

from .callbacks import BatchProgress, TrainingCallback
from .ema import WeightEma
from .grad_norms import StageGradNorms
from .runtime import Runtime

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class TrainingDiverged(SpecError):
    """The loss became inf or NaN: the weights are lost, so the run stops (a user error: the
    fix is a lower learning rate, which the field says)."""

    def __init__(self, epoch: int, batch: int, loss: float) -> None:
        super().__init__(
            "hyperparameters.lr",
            f"training diverged at epoch {epoch}, batch "
            f"{batch} (loss {loss}): lower the learning rate",
        )
        self.epoch, self.batch, self.loss = epoch, batch, loss


@dataclass(frozen=True)
class TrainStats:
    loss: float
    accuracy: float
    images: int
    seconds: float
    lr: float  # the learning rate of the epoch's last step
    grad_norms: dict[str, float]
    skipped_steps: int  # float16 steps the loss scaler skipped (gradients overflowed)


@dataclass(frozen=True)
class EvalStats:
    loss: float
    accuracy: float
    confusion: list[list[int]]  # rows: true class, columns: predicted


@dataclass
class TrainStep:
    """What one optimisation step needs besides the batch (built once per run)."""

    model: nn.Module  # possibly compiled
    base_model: nn.Module  # the module itself, for parameter names and norms
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    grad_clip: float | None
    runtime: Runtime
    ema: WeightEma | None = None

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and exported: the weight average where there is one."""
        return self.ema.module if self.ema is not None else self.model


class _EpochTally:
    """Loss, accuracy and the first non-finite loss, kept on the device and read in one
    transfer at each progress report, so no step waits for the device."""

    def __init__(self, device: torch.device, grad_norms: StageGradNorms) -> None:
        self.values = torch.zeros(4, device=device, dtype=torch.float64)
        self.grad_norms = grad_norms
        self.seen = 0  # images: known on the host without a sync
        self.skipped_read = 0  # skipped steps already taken back from the schedule

    def add(self, index: int, loss: torch.Tensor, correct: torch.Tensor, size: int) -> None:
        loss = loss.detach().double()
        finite = loss.isfinite()
        first_bad = finite.logical_not() & (self.values[2] == 0)
        # [loss sum, correct, first non-finite batch, its loss]
        self.values += torch.stack(
            [
                torch.where(finite, loss * size, 0.0),
                correct.double(),
                first_bad * float(index),
                torch.where(first_bad, loss, 0.0),
            ]
        )
        self.seen += size

    def read(self) -> tuple[float, float, int, float, int]:
        """(loss sum, correct, first non-finite batch or 0, its loss, steps with non-finite
        gradients): one device sync."""
        nonfinite = self.grad_norms.nonfinite.double().view(1)
        loss_sum, correct, bad_batch, bad_loss, skipped = torch.cat(
            [self.values, nonfinite]
        ).tolist()
        return loss_sum, correct, int(bad_batch), bad_loss, int(skipped)


def train_one_epoch(
    step: TrainStep,
    batches: Batches,
    prepare: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    *,
    epoch: int,
    total_batches: int,
    callbacks: TrainingCallback,
) -> TrainStats | None:
    """Train over `batches`; None if a callback asked to stop (the partial epoch is dropped).

    `prepare(images, labels)` gives the inputs and the targets (class indexes or, under
    mixup/cutmix, probabilities). Raises TrainingDiverged at the first report after a
    non-finite loss.
    """
    runtime = step.runtime
    step.model.train()
    grad_norms = StageGradNorms(step.base_model)
    tally = _EpochTally(runtime.device, grad_norms)
    start = time.perf_counter()
    for index, (images, labels) in enumerate(batches, start=1):
        if callbacks.should_stop():
            return None
        inputs, targets = prepare(images, labels)
        labels = labels.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = step.model(inputs)
            loss = step.criterion(logits, targets)
        step.optimizer.zero_grad(set_to_none=True)
        step.scaler.scale(loss).backward()
        step.scaler.unscale_(step.optimizer)  # true gradients for the norms and for clipping
        stage_norms = grad_norms.add()
        if step.grad_clip is not None:  # the global norm from the stage norms: no second pass
            nn.utils.clip_grads_with_norm_(
                step.base_model.parameters(), step.grad_clip, stage_norms.square().sum().sqrt()
            )
        # A fused optimizer skips an overflowed step on the device (no sync); the schedule is
        # taken back for it at the next report.
        step.scaler.step(step.optimizer)
        step.scaler.update()
        step.scheduler.step()
        if step.ema is not None:
            step.ema.update(step.base_model)
        tally.add(index, loss, (logits.detach().argmax(dim=1) == labels).sum(), len(labels))
        if index % runtime.sync_every == 0 or index == total_batches:  # the one sync
            loss_sum = _report(step, tally, epoch)
            elapsed = time.perf_counter() - start
            callbacks.on_batch_end(
                BatchProgress(
                    epoch, index, total_batches, loss_sum / tally.seen, tally.seen / elapsed
                )
            )
    seconds = time.perf_counter() - start
    loss_sum, correct, *_ = tally.read()
    return TrainStats(
        loss=loss_sum / max(tally.seen, 1),
        accuracy=correct / max(tally.seen, 1),
        images=tally.seen,
        seconds=seconds,
        lr=step.optimizer.param_groups[0]["lr"],
        grad_norms=grad_norms.mean(),
        skipped_steps=tally.skipped_read,
    )


def _report(step: TrainStep, tally: _EpochTally, epoch: int) -> float:
    """Read the tallies (one sync); stop on divergence; take the steps the loss scaler skipped
    back from the learning-rate schedule, which counts real optimiser steps only (between two
    reports the rate may run ahead by the steps skipped there). Returns the loss sum."""
    loss_sum, _, bad_batch, bad_loss, skipped = tally.read()
    if bad_batch:
        raise TrainingDiverged(epoch, bad_batch, bad_loss)
    newly = skipped - tally.skipped_read
    if newly and step.scaler.is_enabled():
        step.scheduler.last_epoch -= newly + 1
        step.scheduler.step()  # recomputes the rate for the corrected step count
        tally.skipped_read = skipped
    return loss_sum


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Batches,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    *,
    num_classes: int,
    runtime: Runtime,
    pad_to: int | None = None,
) -> EvalStats:
    """Mean cross-entropy (no label smoothing, so runs with different smoothing compare),
    accuracy and confusion matrix. Counts stay on the device until the end: the confusion
    matrix grows by index_add_, which (unlike bincount) never waits for the device.

    `pad_to`: a shorter (last) batch is padded to this size with copies of its first image
    and the extra outputs dropped, so a compiled model sees one shape (in eval mode each
    image's output is independent of the others')."""
    model.eval()
    loss_sum = torch.zeros((), device=runtime.device)
    confusion = torch.zeros(num_classes * num_classes, device=runtime.device, dtype=torch.long)
    for images, labels in batches:
        labels = labels.to(runtime.device, non_blocking=True)
        size = len(labels)
        if pad_to is not None and size < pad_to:
            images = torch.cat([images, images[:1].expand(pad_to - size, *images.shape[1:])])
        with runtime.autocast():
            logits = model(prepare(images))[:size]
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        pairs = labels * num_classes + logits.argmax(dim=1)
        confusion.index_add_(0, pairs, torch.ones_like(pairs))
    matrix = confusion.view(num_classes, num_classes).tolist()
    total = max(sum(map(sum, matrix)), 1)
    accuracy = sum(matrix[i][i] for i in range(num_classes)) / total
    return EvalStats(loss_sum.item() / total, accuracy, matrix)


def best_details(class_names: list[str], confusion: list[list[int]]) -> BestEpochDetails:
    """Per-class accuracy (recall) and macro F1 from the confusion matrix."""
    per_class, f1s = {}, []
    for i, name in enumerate(class_names):
        true_positive = confusion[i][i]
        actual = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        per_class[name] = true_positive / actual if actual else 0.0
        denominator = actual + predicted
        f1s.append(2 * true_positive / denominator if denominator else 0.0)
    return BestEpochDetails(
        class_names=class_names,
        per_class_accuracy=per_class,
        confusion_matrix=confusion,
        macro_f1=sum(f1s) / len(f1s),
    )
