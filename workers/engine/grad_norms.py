"""Per-stage gradient norms, summed on the device over an epoch and read once at its end.

`models.stage_grad_norms` answers with Python floats, so each call waits for the device, and
it walks the parameters one small op at a time (about a tenth of a training step of
ResNet-34 at 64 px on two CPU cores). The epoch mean needs neither: the parameters are grouped
once, each step adds one fused norm per stage to a tensor on the device, and the epoch ends
with a single transfer. The grouping is `models.stage_parameters`, as for `stage_grad_norms`;
`test_stage_norms_match_models` checks that the two agree on every architecture.

Only finite steps count: under float16 loss scaling a step whose gradients overflowed is
skipped by the scaler, and its inf/NaN norms would turn the epoch's mean into NaN (which
PostgreSQL's JSON type refuses). Those steps are counted instead (`nonfinite`).
"""

from __future__ import annotations

import torch
from torch import nn

from models import STAGES, stage_parameters


class StageGradNorms:
    """Running sums of each stage's gradient L2 norm over finite steps; read at sync points."""

    def __init__(self, model: nn.Module) -> None:
        self.groups = stage_parameters(model)
        self.device = next(model.parameters()).device
        self.totals = torch.zeros(len(STAGES), device=self.device)
        self.finite_steps = torch.zeros((), device=self.device)
        self.nonfinite = torch.zeros((), device=self.device)  # steps with inf/NaN gradients

    def add(self) -> torch.Tensor:
        """Add this step's norms (call after backward and unscaling); returns them, per stage."""
        norms = []
        for stage in STAGES:
            grads = [p.grad for p in self.groups[stage] if p.grad is not None]
            norms.append(
                nn.utils.get_total_norm(grads).float()
                if grads
                else torch.zeros((), device=self.device)
            )
        step_norms = torch.stack(norms)
        finite = step_norms.isfinite().all()
        self.totals += torch.where(finite, step_norms, 0.0)
        self.finite_steps += finite
        self.nonfinite += ~finite
        return step_norms

    def mean(self) -> dict[str, float]:
        """Mean over the finite steps; empty when no step was finite (nothing to report)."""
        *totals, steps = torch.cat([self.totals, self.finite_steps.view(1)]).tolist()
        if steps == 0:
            return {}
        return {stage: total / steps for stage, total in zip(STAGES, totals, strict=True)}
