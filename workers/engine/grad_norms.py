"""Per-stage gradient norms, summed on the device over an epoch and read once at its end.

`models.stage_grad_norms` answers with Python floats, so each call waits for the device, and
it walks the parameters one small op at a time (about a tenth of a training step of
ResNet-34 at 64 px on two CPU cores). The epoch mean needs neither: the parameters are grouped
once, each step adds one fused norm per stage to a tensor on the device, and the epoch ends
with a single transfer. The grouping is `models.stage_parameters`, as for `stage_grad_norms`;
`test_stage_norms_match_models` checks that the two agree on every architecture.
"""

from __future__ import annotations

import torch
from torch import nn

from models import STAGES, stage_parameters


class StageGradNorms:
    """Running sums of each stage's gradient L2 norm; `mean()` is the only device sync."""

    def __init__(self, model: nn.Module) -> None:
        self.groups = stage_parameters(model)
        self.device = next(model.parameters()).device
        self.totals = torch.zeros(len(STAGES), device=self.device)
        self.steps = 0

    def add(self) -> torch.Tensor:
        """Add this step's norms (call after backward and unscaling); returns them, per stage."""
        norms = []
        for stage in STAGES:
            grads = [p.grad for p in self.groups[stage] if p.grad is not None]
            norms.append(nn.utils.get_total_norm(grads).float() if grads
                         else torch.zeros((), device=self.device))
        step_norms = torch.stack(norms)
        self.totals += step_norms
        self.steps += 1
        return step_norms

    def mean(self) -> dict[str, float]:
        means = (self.totals / max(self.steps, 1)).tolist()
        return dict(zip(STAGES, means, strict=True))
