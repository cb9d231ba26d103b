"""One epoch of training, one pass of evaluation. Progress leaves through callbacks only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.specs import BestEpochDetails

from .callbacks import BatchProgress, TrainingCallback
from .grad_norms import StageGradNorms
from .runtime import Runtime

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainStats:
    loss: float
    accuracy: float
    images: int
    seconds: float
    lr: float  # the learning rate of the epoch's last step
    grad_norms: dict[str, float]


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


def train_one_epoch(step: TrainStep, batches: Batches, prepare: Callable[[torch.Tensor],
                    torch.Tensor], *, epoch: int, total_batches: int,
                    callbacks: TrainingCallback) -> TrainStats | None:
    """Train over `batches`; None if a callback asked to stop (the partial epoch is dropped)."""
    runtime = step.runtime
    step.model.train()
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    grad_norms = StageGradNorms(step.base_model)
    seen, start = 0, time.perf_counter()
    for index, (images, labels) in enumerate(batches, start=1):
        if callbacks.should_stop():
            return None
        inputs = prepare(images)
        labels = labels.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = step.model(inputs)
            loss = step.criterion(logits, labels)
        step.optimizer.zero_grad(set_to_none=True)
        step.scaler.scale(loss).backward()
        step.scaler.unscale_(step.optimizer)  # true gradients for the norms and for clipping
        stage_norms = grad_norms.add()
        if step.grad_clip is not None:  # the global norm from the stage norms: no second pass
            nn.utils.clip_grads_with_norm_(step.base_model.parameters(), step.grad_clip,
                                           stage_norms.square().sum().sqrt())
        step.scaler.step(step.optimizer)
        step.scaler.update()
        step.scheduler.step()
        loss_sum += loss.detach().float() * len(labels)
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += len(labels)
        if index % runtime.sync_every == 0 or index == total_batches:  # .item() waits
            elapsed = time.perf_counter() - start
            callbacks.on_batch_end(BatchProgress(epoch, index, total_batches,
                                                 loss_sum.item() / seen, seen / elapsed))
    seconds = time.perf_counter() - start
    return TrainStats(
        loss=loss_sum.item() / max(seen, 1),
        accuracy=correct.item() / max(seen, 1),
        images=seen,
        seconds=seconds,
        lr=step.optimizer.param_groups[0]["lr"],
        grad_norms=grad_norms.mean(),
    )


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, prepare: Callable[[torch.Tensor], torch.Tensor],
             *, num_classes: int, runtime: Runtime) -> EvalStats:
    """Mean cross-entropy (no label smoothing, so runs with different smoothing compare),
    accuracy and confusion matrix. Counts stay on the device until the end."""
    model.eval()
    loss_sum = torch.zeros((), device=runtime.device)
    confusion = torch.zeros(num_classes * num_classes, device=runtime.device, dtype=torch.long)
    for images, labels in batches:
        labels = labels.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = model(prepare(images))
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        pairs = labels * num_classes + logits.argmax(dim=1)
        confusion += torch.bincount(pairs, minlength=num_classes * num_classes)
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
    return BestEpochDetails(class_names=class_names, per_class_accuracy=per_class,
                            confusion_matrix=confusion, macro_f1=sum(f1s) / len(f1s))
