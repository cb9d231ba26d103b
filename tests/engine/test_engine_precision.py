"""Numeric precision (bfloat16, float16 with loss scaling), divergence and the fp16 step path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_testlib import Recorder, tiny_spec
from torch import nn

from core.specs import SpecError
from models import build_model
from workers.engine import train
from workers.engine.loop import TrainingDiverged, TrainStep, train_one_epoch
from workers.engine.optim import build_optimizer, build_scheduler
from workers.engine.run import _restore
from workers.engine.runtime import Runtime, compute_dtype, fit_image_size, select_runtime


def _cpu_runs_bfloat16() -> bool:
    """Whether this CPU's torch can train a convolution under bfloat16 autocast at all
    (emulated is fine for correctness; only native bf16 is fast)."""
    try:
        conv = nn.Conv2d(3, 4, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(torch.randn(1, 3, 8, 8)).float().sum().backward()
        return True
    except RuntimeError:
        return False


needs_bf16 = pytest.mark.skipif(
    not _cpu_runs_bfloat16(), reason="this CPU's torch cannot run bfloat16 convolutions"
)


def _comparable(metrics) -> dict:  # noqa: ANN001
    # Timings and the machine's load vary between runs; everything else must be equal.
    return metrics.model_dump(
        exclude={"epoch_seconds", "train_images_per_second", "epoch_cpu_seconds", "load_average"}
    )


@needs_bf16
@pytest.mark.slow
def test_bfloat16_with_the_full_recipe_trains_and_resumes_exactly(
    easy_data: Path, tmp_path: Path, runs: Path
):
    """bfloat16 autocast, channels_last, EMA, mixup/cutmix, random erasing, smaller training
    crops and step warm-up: a cancelled and resumed run equals an uninterrupted one."""
    spec = tiny_spec(
        epochs=2,
        image_size=32,
        precision="bfloat16",
        momentum=0.9,
        scheduler="cosine",
        warmup_steps=3,
        augmentation="standard",
        lr=0.01,
        ema_epochs=0.5,
        mixup_alpha=0.2,
        cutmix_alpha=1.0,
        random_erasing=0.5,
        train_size_fraction=0.75,
    )
    recorder = Recorder()
    whole = train(
        spec, easy_data, runs / "whole", callbacks=[recorder], cache_dir=tmp_path / "cache"
    )
    info = recorder.of("run_start")[0]
    assert info.precision == "bfloat16" and info.device.endswith("bf16)")
    cancelled = train(
        spec,
        easy_data,
        runs / "split",
        callbacks=[Recorder(stop_at=(2, 1))],
        cache_dir=tmp_path / "cache",
    )
    assert [m.epoch for m in cancelled.epochs] == [1]
    resumed = train(spec, easy_data, runs / "split", cache_dir=tmp_path / "cache")
    assert [_comparable(m) for m in resumed.epochs] == [_comparable(m) for m in whole.epochs]
    assert all(m.skipped_steps == 0 and m.grad_norms for m in whole.epochs)


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("workers.engine.runtime.cpu_has_native_bf16", lambda: True)
    native = select_runtime("cpu", "auto")
    assert (native.amp_dtype, native.channels_last, native.precision) == (
        torch.bfloat16,
        True,
        "bfloat16",
    )
    monkeypatch.setattr("workers.engine.runtime.cpu_has_native_bf16", lambda: False)
    emulated = select_runtime("cpu", "auto")
    assert (emulated.amp_dtype, emulated.channels_last) == (None, False)
    assert emulated.describe().endswith("fp32)")
    assert compute_dtype("bfloat16", cpu) == torch.bfloat16  # asked for: given
    assert compute_dtype("float32", cpu) is None
    # CUDA: bf16 only where the hardware has it (Ampere, 8.0), fp16 with scaling before.
    gpu = torch.device("cuda", 0)
    for capability, dtype in (
        ((7, 5), torch.float16),
        ((8, 0), torch.bfloat16),
        ((9, 0), torch.bfloat16),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d, c=capability: c)
        assert compute_dtype("auto", gpu) == dtype


def _scaled_step(model: nn.Module, spec, sync_every: int) -> TrainStep:  # noqa: ANN001
    """The float16 path's step objects: loss scaling and a fused optimizer. The convolutions
    run in float32 here (float16 ones are emulated on most CPUs and take seconds each); what
    is tested (skips, schedule, syncs) does not depend on them."""
    hp = spec.hyperparameters
    runtime = Runtime(torch.device("cpu"), None, channels_last=False, sync_every=sync_every)
    optimizer = build_optimizer(model, hp, fused=True)
    return TrainStep(
        model=model,
        base_model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, hp, steps_per_epoch=6),
        scaler=torch.amp.GradScaler("cpu"),
        criterion=nn.CrossEntropyLoss(),
        grad_clip=1.0,
        runtime=runtime,
    )


def _batches(count: int, classes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.rand(4, 3, 16, 16, generator=generator),
            torch.randint(0, classes, (4,), generator=generator),
        )
        for _ in range(count)
    ]


@pytest.mark.slow
def test_loss_scaling_skips_overflowed_steps_without_a_sync_per_step(
    monkeypatch: pytest.MonkeyPatch,
):
    """A step whose gradients overflow is skipped by the scaler: the epoch's norms stay
    finite, the step is counted, the schedule counts only real steps, and the loop reads the
    device only at its reports (fused optimizer: no .item() per step)."""
    torch.manual_seed(0)
    model = build_model("resnet34", 3)
    spec = tiny_spec(epochs=1, lr=0.1, scheduler="cosine", momentum=0.9)
    calls = {"backward": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:  # the third step's gradients overflow
        calls["backward"] += 1
        return grad * float("inf") if calls["backward"] == 3 else grad

    model.fc.weight.register_hook(poison)
    step = _scaled_step(model, spec, sync_every=3)
    syncs = {"item": 0, "tolist": 0}
    for name in syncs:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original):  # noqa: ANN001, ANN202
            syncs[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    stats = train_one_epoch(
        step,
        _batches(6),
        lambda images, labels: (images, labels),
        epoch=1,
        total_batches=6,
        callbacks=Recorder(),
    )
    monkeypatch.undo()
    assert stats is not None and stats.skipped_steps == 1
    assert set(stats.grad_norms) and all(
        v == v and v != float("inf") for v in stats.grad_norms.values()
    )
    assert step.scheduler.last_epoch == 5  # six steps, one skipped
    assert step.optimizer.param_groups[0]["lr"] == pytest.approx(
        0.1 * step.scheduler.lr_lambdas[0](5)
    )
    assert step.scaler.get_scale() < 65536.0  # the scaler backed off once
    # Reads: one per report (batches 3 and 6), the epoch's totals and the norms' mean.
    assert syncs == {"item": 0, "tolist": 4}


@pytest.mark.slow
def test_a_non_finite_loss_stops_training_clearly(
    synth_data: Path, tmp_path: Path, runs: Path, monkeypatch: pytest.MonkeyPatch
):
    real_loss = nn.CrossEntropyLoss

    class LossGoingNan(real_loss):
        calls = 0

        def forward(self, logits, targets):  # noqa: ANN001, ANN201
            LossGoingNan.calls += 1
            loss = super().forward(logits, targets)
            return loss * float("nan") if LossGoingNan.calls >= 5 else loss

    monkeypatch.setattr("workers.engine.run.nn.CrossEntropyLoss", LossGoingNan)
    recorder = Recorder()
    with pytest.raises(TrainingDiverged) as error:
        train(
            tiny_spec(epochs=3, image_size=16),
            synth_data,
            runs / "run",
            callbacks=[recorder],
            cache_dir=tmp_path / "cache",
        )
    per_epoch = recorder.of("batch")[0].total_batches
    epoch, batch = 1 + 4 // per_epoch, 1 + 4 % per_epoch  # the fifth step
    assert epoch >= 2  # so a checkpoint of epoch 1 exists
    assert str(error.value) == (
        f"hyperparameters.lr: training diverged at epoch {epoch}, "
        f"batch {batch} (loss nan): lower the learning rate"
    )
    saved = torch.load(runs / "run" / "last.pt", weights_only=True)
    assert saved["epoch"] == epoch - 1  # the diverged epoch left nothing behind


@pytest.mark.slow
def test_float16_resumes_a_run_saved_without_loss_scaling(
    easy_data: Path, tmp_path: Path, runs: Path
):
    """precision=auto on a host with bf16, resumed on one without (a GPU before Ampere): the
    checkpoint's scaler state is empty, and the float16 run starts a fresh scaler."""
    first = train(
        tiny_spec(epochs=1, image_size=16), easy_data, runs / "run", cache_dir=tmp_path / "cache"
    )
    state = torch.load(first.last_checkpoint, weights_only=True)
    assert state["scaler"] == {}  # float32: no loss scaling
    model = build_model("resnet34", 2)
    model.load_state_dict(state["model"])
    step = _scaled_step(model, tiny_spec(epochs=2, image_size=16), sync_every=1)
    history = _restore(step, state)
    assert [m.epoch for m in history] == [1]
    assert step.scaler.is_enabled() and step.scaler.get_scale() == 65536.0
    # The saved run's optimizer was unfused: the restored one keeps its own fused kernels.
    assert all(group["fused"] for group in step.optimizer.param_groups)
    stats = train_one_epoch(
        step,
        _batches(2, classes=2),
        lambda images, labels: (images, labels),
        epoch=2,
        total_batches=2,
        callbacks=Recorder(),
    )
    assert stats is not None and stats.grad_norms


def test_cpu_bfloat16_is_not_used_where_its_gradients_are_wrong():
    bf16 = select_runtime("cpu", "bfloat16")
    assert fit_image_size(bf16, "bfloat16", 17) is bf16
    fallback = fit_image_size(bf16, "auto", 16)  # auto: float32 instead
    assert (fallback.amp_dtype, fallback.channels_last, fallback.precision) == (
        None,
        False,
        "float32",
    )
    with pytest.raises(SpecError, match="hyperparameters.precision.*at least 17 px"):
        fit_image_size(bf16, "bfloat16", 16)


@pytest.mark.slow
@needs_bf16
def test_bfloat16_gradients_are_exact_at_the_smallest_size_it_trains():
    """At 16 px oneDNN's bf16 backward gives run-to-run garbage in layer4; from 17 px up the
    same step gives the same finite gradients every time."""
    torch.manual_seed(0)
    model = build_model("resnet34", 5).to(memory_format=torch.channels_last)
    images = torch.randn(16, 3, 17, 17).contiguous(memory_format=torch.channels_last)
    grads = []
    for _ in range(6):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(images).float().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    assert grads[0].abs().max() < 1e4


def test_a_16_px_bfloat16_job_is_refused_before_it_trains(easy_data: Path, tmp_path: Path):
    spec = tiny_spec(epochs=1, image_size=16, precision="bfloat16")
    with pytest.raises(SpecError, match="hyperparameters.precision"):
        train(spec, easy_data, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "run" / "last.pt").exists()
