"""The optimiser's kernels and the learning-rate rule for larger batches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from engine_testlib import tiny_spec

from core.specs import Hyperparameters, SpecError, resolve_hyperparameters, scaled_lr
from workers.engine.optim import build_optimizer, kernel_flags


def test_lr_scales_linearly_for_sgd_and_by_the_square_root_for_adam():
    assert scaled_lr(0.05, 256, 32, "sgd") == pytest.approx(0.4)
    assert scaled_lr(1e-3, 256, 64, "adam") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 512, 32, "adamw") == pytest.approx(4e-3)
    assert scaled_lr(0.1, 16, 32, "sgd") == pytest.approx(0.05)  # smaller batches too
    assert scaled_lr(0.05, 256, None, "sgd") == 0.05  # no reference: lr as given

    hp = resolve_hyperparameters("recommended", {"batch_size": 256, "reference_batch_size": 32})
    assert hp.lr == 0.025 and hp.effective_lr == pytest.approx(0.2)
    with pytest.raises(SpecError, match="above 10") as error:
        resolve_hyperparameters(
            "reference", {"lr": 1.0, "batch_size": 4096, "reference_batch_size": 8}
        )
    assert error.value.field == "hyperparameters"


def test_the_optimizer_runs_at_the_scaled_rate():
    hp = tiny_spec(batch_size=64, reference_batch_size=16, optimizer="sgd", lr=0.01).hyperparameters
    optimizer = build_optimizer(torch.nn.Linear(3, 2), hp)
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(0.04)] * 2


def test_fused_kernels_where_the_device_has_them_foreach_elsewhere():
    def on(*devices: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(device=torch.device(name)) for name in devices]

    assert kernel_flags(on("cuda", "cuda")) == {"fused": True}
    assert kernel_flags(on("cpu", "cpu")) == {"fused": True}
    assert kernel_flags(on("cpu", "meta")) == {"foreach": True}
    assert kernel_flags(on("meta"), fused=True) == {"fused": True}  # fp16 scaling asks

    for name in ("sgd", "adam", "adamw"):
        hp = tiny_spec(optimizer=name, momentum=0.9 if name == "sgd" else 0.0).hyperparameters
        optimizer = build_optimizer(torch.nn.Linear(3, 2), hp)
        for group in optimizer.param_groups:
            assert group["fused"] is True and not group.get("foreach")


def _weights_after_five_steps(hp: Hyperparameters, flags: dict[str, bool]) -> torch.Tensor:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8))
    optimizer = build_optimizer(model, hp)
    for group in optimizer.param_groups:
        group.update({"fused": None, "foreach": None} | flags)
    for step in range(5):
        inputs = torch.randn(4, 6, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        model(inputs).square().mean().backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fused_and_foreach_sgd_take_the_same_steps_on_the_cpu():
    """The CPU's fused kernels change the speed, not the run: Nesterov SGD with weight decay
    on weights only, as `recommended` trains, lands on the same weights to rounding."""
    hp = resolve_hyperparameters("recommended", {"lr": 0.5})
    fused = _weights_after_five_steps(hp, {"fused": True})
    foreach = _weights_after_five_steps(hp, {"foreach": True})
    still = _weights_after_five_steps(hp.model_copy(update={"lr": 1e-12}), {"fused": True})
    assert torch.allclose(fused, foreach, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(fused, still, atol=1e-3)  # the steps did move the weights
