"""Optimizer and learning-rate schedule from the hyperparameters.

Every schedule is a LambdaLR stepped once per batch, with warm-up folded into the same
function. The schedule is recomputed from the hyperparameters on resume (only the step count
is stored), which is what lets a resumed run extend `epochs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from core.specs import Hyperparameters

# OneCycle's usual shape (Smith 2018; torch's OneCycleLR defaults): start at lr/25, end at lr/1e4.
ONECYCLE_START, ONECYCLE_END = 1 / 25, 1 / 25 / 1e4
ONECYCLE_WARMUP = 0.3  # fraction of training spent rising when warmup_epochs is 0


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: decaying BN scales and biases just fights the normalisation."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# Devices with torch's fused optimiser kernels (one kernel per step over all parameters).
FUSED_DEVICES = frozenset({"cpu", "cuda"})


def kernel_flags(params: Iterable[torch.Tensor], fused: bool | None = None) -> dict[str, bool]:
    """The optimiser implementation: `fused` wherever the parameters' device has the kernels
    (the CPU too: for ResNet-34's SGD step with Nesterov and weight decay, 17 against 53-73 ms
    for `foreach` on 2 threads, a fifth of a 64 px training step), else `foreach`.
    `fused=True` forces them: under float16 loss scaling they skip an overflowed step on the
    device, where the unfused path asks the host (a sync per step)."""
    if fused or (fused is None and all(p.device.type in FUSED_DEVICES for p in params)):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(
    model: nn.Module, hp: Hyperparameters, *, fused: bool | None = None
) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW at the effective rate (`lr` scaled from reference_batch_size), with
    the kernels of `kernel_flags`."""
    groups = parameter_groups(model, hp.weight_decay)
    kernel = kernel_flags(list(model.parameters()), fused)
    use_fused, use_foreach = kernel.get("fused"), kernel.get("foreach")
    lr = hp.effective_lr
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=hp.momentum,
            nesterov=hp.nesterov,
            fused=use_fused,
            foreach=use_foreach,
        )
    if hp.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=use_fused, foreach=use_foreach)
    return torch.optim.AdamW(groups, lr=lr, fused=use_fused, foreach=use_foreach)


def warmup_steps(hp: Hyperparameters, steps_per_epoch: int) -> int:
    """Warm-up length in steps: `warmup_epochs` when set (an override of a preset that counts
    in steps), else `warmup_steps` capped at a third of the run."""
    if hp.warmup_epochs:
        return hp.warmup_epochs * steps_per_epoch
    return min(hp.warmup_steps, hp.epochs * steps_per_epoch // 3)


def lr_factor(step: int, hp: Hyperparameters, steps_per_epoch: int) -> float:
    """Multiplier of hp.lr for optimizer step `step` (0-based)."""
    total = max(1, hp.epochs * steps_per_epoch)
    if hp.scheduler == "onecycle":
        rise = warmup_steps(hp, steps_per_epoch) or round(ONECYCLE_WARMUP * total)
        if step < rise:
            return _cosine(step / max(rise, 1), ONECYCLE_START, 1.0)
        return _cosine((step - rise) / max(total - rise, 1), 1.0, ONECYCLE_END)
    warmup = warmup_steps(hp, steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup  # linear, never exactly zero so the first step moves
    if hp.scheduler == "step":
        return hp.gamma ** (step // steps_per_epoch // hp.step_size)
    if hp.scheduler == "cosine":
        return _cosine((step - warmup) / max(total - warmup, 1), 1.0, 0.0)
    return 1.0


def _cosine(progress: float, start: float, end: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, hp: Hyperparameters, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    # A closure, not a callable object: LambdaLR then keeps it out of its state_dict.
    def factor(step: int) -> float:
        return lr_factor(step, hp, steps_per_epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
