"""An exponential moving average of the weights, for evaluation and export.

Averages every floating-point entry of the state dict, BatchNorm running statistics included
(as timm's ModelEmaV2 does), so the average is a network that evaluates as it is. The decay
warms up as (1 + n) / (10 + n) (timm, torchvision's reference scripts): the first hundred
steps follow the fast-moving weights closely instead of averaging in the random start, which
is what made an EMA copy of a 15-epoch run sit near chance.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def ema_decay(epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose time constant is `epochs` epochs of this dataset."""
    return 1.0 - 1.0 / max(epochs * steps_per_epoch, 1.0)


class WeightEma:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0
        # state_dict() tensors share storage with the modules: these pairs stay live.
        own, theirs = self.module.state_dict(), model.state_dict()
        floats = [key for key, value in own.items() if value.is_floating_point()]
        counters = [key for key in own if key not in floats]
        self._averaged = ([own[key] for key in floats], [theirs[key] for key in floats])
        self._copied = ([own[key] for key in counters], [theirs[key] for key in counters])

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model` (the module trained, same structure)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(*self._averaged, 1.0 - decay)
        # Integer buffers (BatchNorm's step counters) are copied, not averaged.
        torch._foreach_copy_(*self._copied)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = state["updates"]
