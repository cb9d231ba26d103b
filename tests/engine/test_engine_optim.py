"""The optimiser's kernels and the learning-rate rule for larger batches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from engine_testlib import tiny_spec

from core.specs import SpecError, resolve_hyperparameters, scaled_lr
from workers.engine.optim import build_optimizer, kernel_flags


def test_lr_scales_linearly_for_sgd_and_by_the_square_root_for_adam():
    assert scaled_lr(0.05, 256, 32, "sgd") == pytest.approx(0.4)
    assert scaled_lr(1e-3, 256, 64, "adam") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 512, 32, "adamw") == pytest.approx(4e-3)
    assert scaled_lr(0.1, 16, 32, "sgd") == pytest.approx(0.05)  # smaller batches too
    assert scaled_lr(0.05, 256, None, "sgd") == 0.05  # no reference: lr as given

    hp = resolve_hyperparameters("recommended", {"batch_size": 256, "reference_batch_size": 32})
    assert hp.lr == 0.05 and hp.effective_lr == pytest.approx(0.4)
    with pytest.raises(SpecError, match="above 10") as error:
        resolve_hyperparameters(
            "reference", {"lr": 1.0, "batch_size": 4096, "reference_batch_size": 8}
        )
    assert error.value.field == "hyperparameters"


def test_the_optimizer_runs_at_the_scaled_rate():
    hp = tiny_spec(batch_size=64, reference_batch_size=16, optimizer="sgd", lr=0.01).hyperparameters
    optimizer = build_optimizer(torch.nn.Linear(3, 2), hp)
    assert [group["lr"] for group in optimizer.param_groups] == [pytest.approx(0.04)] * 2


def test_fused_kernels_only_for_cuda_parameters_foreach_on_the_cpu():
    on_gpu = [SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=True)]
    assert kernel_flags(on_gpu) == {"fused": True}
    assert kernel_flags([SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)]) == {
        "foreach": True
    }
    assert kernel_flags([torch.zeros(2)], fused=True) == {"fused": True}  # fp16 scaling asks

    for name in ("sgd", "adam", "adamw"):
        hp = tiny_spec(optimizer=name).hyperparameters
        optimizer = build_optimizer(torch.nn.Linear(3, 2), hp)
        for group in optimizer.param_groups:
            assert group["foreach"] is True and not group.get("fused")
