"""`train()`: wires data, model, optimizer and checkpoints together and runs the epochs.

Reproducibility by construction: every epoch seeds torch and its own data generator from
(seed, epoch), so an epoch's shuffling, augmentation and dropout depend on nothing that came
before it except the weights and optimizer state, which the checkpoint restores exactly.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from core.errors import architecture_error
from core.faults import pause_point
from core.settings import get_settings
from core.specs import EpochMetrics, SpecError, TestMetrics, TrainSpec, best_epoch, epoch_score
from core.storage import atomic_write
from models import (
    ModelConfigError,
    build_model,
    count_flops,
    count_parameters,
    save_bundle,
    validate_options,
)
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD

from .augment import BatchTransform, Regularisers
from .callbacks import CallbackList, RunInfo, RunResult, RunStatus, TrainingCallback
from .checkpoints import (
    BEST,
    BUNDLE,
    FORMAT,
    LAST,
    VERSION,
    CheckpointSchedule,
    EpochSaver,
    bundle_source,
    check_resumable,
    file_event,
    history_of,
    load_checkpoint,
    recover_checkpoints,
    remove_partial_files,
    restore_rng_state,
    rng_state,
)
from .data import BatchBuffers, PreparedData, batch_plan, iterate_batches, prepare_data
from .ema import WeightEma, ema_decay
from .loop import EvalStats, TrainStats, TrainStep, best_details, evaluate, train_one_epoch
from .optim import build_optimizer, build_scheduler
from .runtime import Runtime, fit_image_size, select_runtime

TEST = "test.json"


def train(
    spec: TrainSpec,
    data: Path,
    out_dir: Path,
    *,
    callbacks: Iterable[TrainingCallback] = (),
    cache_dir: Path | None = None,
    checkpoint_seconds: float | None = None,
) -> RunResult:
    """Train `spec` on the dataset at `data` (folder or .zip), checkpointing into `out_dir`.

    Resumes from out_dir/last.pt when present. `checkpoint_seconds`: least time between full
    checkpoints (default FOODLAB_CHECKPOINT_SECONDS, else `checkpoint_interval`'s rule); the
    best and the last epoch are always written. Raises SpecError or DatasetError for input the
    user can fix, before any training starts.
    """
    hp = spec.hyperparameters
    out_dir = Path(out_dir)
    events = CallbackList(callbacks)
    _check_architecture(spec)
    runtime = fit_image_size(
        select_runtime(hp.device, hp.precision), hp.precision, hp.train_image_size
    )
    prepared = prepare_data(Path(data), hp, Path(cache_dir or get_settings().cache_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partial_files(out_dir)
    identity = {"class_names": prepared.class_names, "split_id": prepared.split_id}

    resume = load_checkpoint(out_dir / LAST) if (out_dir / LAST).is_file() else None
    if resume is not None:
        check_resumable(resume, spec, identity, out_dir / LAST)
    torch.manual_seed(hp.seed)
    model = _build(
        spec, len(prepared.class_names), weights=resume["model"] if resume is not None else None
    )
    num_parameters = count_parameters(model)
    gflops = count_flops(model, hp.image_size) / 1e9
    step = _training_objects(model, spec, runtime, len(prepared.train))
    history: list[EpochMetrics] = []
    if resume is not None:
        history = _restore(step, resume)

    events.on_run_start(
        RunInfo(
            class_names=prepared.class_names,
            train_size=len(prepared.train),
            val_size=len(prepared.val),
            skipped=prepared.skipped,
            total_epochs=hp.epochs,
            start_epoch=len(history) + 1,
            device=runtime.describe(),
            precision=runtime.precision,
            num_parameters=num_parameters,
            gflops=gflops,
            history=list(history),
            test_size=len(prepared.test),
        )
    )
    resumed_best = best_epoch(history)
    if resumed_best is not None:  # a resumed run
        recover_checkpoints(out_dir, resumed_best.epoch, len(history), events)
    if checkpoint_seconds is None:
        checkpoint_seconds = get_settings().checkpoint_seconds
    schedule = CheckpointSchedule(checkpoint_interval(runtime, checkpoint_seconds))
    saver = EpochSaver(out_dir, events, schedule, background=checkpoints_in_background(runtime))
    try:
        status, _ = _run_epochs(step, spec, prepared, history, saver)
        saver.finish()  # the last epochs' files and rows, before the bundle is made from them
    finally:
        saver.close()

    bundle = out_dir / BUNDLE
    best = _best_epoch(history)
    if best is not None:
        _ensure_bundle(spec, prepared, history[best - 1], out_dir, num_parameters, gflops, events)
    test = None
    if best is not None and status != "cancelled" and len(prepared.test):
        test = score_test(spec, prepared, best, out_dir, runtime)
    result = RunResult(
        status=status,
        epochs=history,
        best_epoch=best,
        class_names=prepared.class_names,
        skipped=prepared.skipped,
        num_parameters=num_parameters,
        gflops=gflops,
        last_checkpoint=_existing(out_dir / LAST),
        best_checkpoint=_existing(out_dir / BEST),
        bundle=_existing(bundle),
        test=test,
    )
    events.on_run_end(result)
    return result


def _run_epochs(
    step: TrainStep,
    spec: TrainSpec,
    prepared: PreparedData,
    history: list[EpochMetrics],
    saver: EpochSaver,
) -> tuple[RunStatus, bool]:
    """Train the remaining epochs, appending to `history`; (status, whether any epoch ran).
    Every epoch goes to `saver`, which checkpoints and records it (the caller finishes it)."""
    events = saver.events
    # The saver first: a finished write's rows go before the next batch's progress.
    batch_events = CallbackList([saver, events])
    hp = spec.hyperparameters
    runtime = step.runtime
    transform = BatchTransform(
        image_size=hp.image_size,
        augmentation=hp.augmentation,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        device=runtime.device,
        channels_last=runtime.channels_last,
        train_size=hp.train_image_size,
        regularisers=Regularisers(hp.random_erasing, hp.mixup_alpha, hp.cutmix_alpha),
    )
    num_classes = len(prepared.class_names)
    # Batches are read by a thread into reused buffers (pinned for a GPU) ahead of training.
    read = partial(
        iterate_batches,
        prepared,
        num_workers=hp.num_workers,
        pin_memory=runtime.device.type == "cuda",
        buffers=BatchBuffers(pin=runtime.device.type == "cuda"),
    )
    train_crop = None if transform.needs_full_image else hp.image_size
    train_source = prepared.train_source_file if transform.needs_full_image else None
    val_plan = batch_plan(len(prepared.val), hp.eval_batch_size, None)
    trained = False
    for epoch in range(len(history) + 1, hp.epochs + 1):
        if _patience_exhausted(history, hp.early_stopping_patience):
            return "early_stopped", trained
        torch.manual_seed(derived_seed(hp.seed, epoch, "torch"))  # dropout, drop-path
        generator = torch.Generator().manual_seed(derived_seed(hp.seed, epoch, "data"))
        plan = batch_plan(len(prepared.train), hp.batch_size, generator)
        clock = EpochClock()
        prepare = partial(transform.train_batch, num_classes=num_classes, generator=generator)
        # closing(): a cancelled epoch stops its reader thread at once.
        with closing(read(prepared.train, plan, crop=train_crop, source=train_source)) as batches:
            stats = train_one_epoch(
                step,
                batches,
                prepare,
                epoch=epoch,
                total_batches=len(plan),
                callbacks=batch_events,
            )
        if stats is None:
            return "cancelled", trained
        with closing(read(prepared.val, val_plan, crop=hp.image_size)) as batches:
            scores = evaluate(
                step.eval_model,
                batches,
                transform,
                num_classes=num_classes,
                runtime=runtime,
                pad_to=hp.eval_batch_size if step.model is not step.base_model else None,
            )
        metrics = _epoch_metrics(epoch, stats, scores, history, prepared.class_names, clock)
        history.append(metrics)
        trained = True
        final = epoch == hp.epochs or _patience_exhausted(history, hp.early_stopping_patience)
        saver.epoch_done(
            metrics, partial(_checkpoint_state, step, spec, prepared, history), final=final
        )
    return "completed", trained


# On a GPU an epoch of a few thousand photos takes about a second, and a ResNet-34 checkpoint
# (170 MB) half of that: every epoch would be a third of the time spent writing. On the CPU
# an epoch takes minutes and the write is noise, so every epoch is kept as before.
GPU_CHECKPOINT_SECONDS = 30.0


def checkpoint_interval(runtime: Runtime, configured: float | None) -> float:
    """Least seconds between full checkpoints: the setting, else 30 on CUDA, 0 on the CPU."""
    if configured is not None:
        return configured
    return GPU_CHECKPOINT_SECONDS if runtime.device.type == "cuda" else 0.0


def checkpoints_in_background(runtime: Runtime) -> bool:
    """Whether checkpoints are written while the next epoch trains: on a GPU, where the write
    is host work the device need not wait for. On the CPU the writer thread would take the
    cores training uses, and written in line an epoch's rows land at its end, so a search's
    pruning and early stopping act on the epoch just done (tiny epochs outran the writer)."""
    return runtime.device.type == "cuda"


class EpochClock:
    """Wall and process CPU time since it was made. On a busy machine the wall time of an epoch
    grows with everyone else's load; the CPU seconds this process spent grow far less, so cost
    comparisons across jobs use them (with the load average recorded beside)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _epoch_metrics(
    epoch: int,
    stats: TrainStats,
    scores: EvalStats,
    history: list[EpochMetrics],
    class_names: list[str],
    clock: EpochClock,
) -> EpochMetrics:
    seconds, cpu_seconds = clock.elapsed()
    best = _best_epoch(history)
    previous = history[best - 1] if best is not None else None
    is_best = previous is None or epoch_score(scores.accuracy, scores.loss) > epoch_score(
        previous.val_accuracy, previous.val_loss
    )
    return EpochMetrics(
        epoch=epoch,
        train_loss=stats.loss,
        train_accuracy=stats.accuracy,
        val_loss=scores.loss,
        val_accuracy=scores.accuracy,
        lr=stats.lr,
        epoch_seconds=seconds,
        epoch_cpu_seconds=cpu_seconds,
        load_average=os.getloadavg()[0],
        train_images_per_second=stats.images / max(stats.seconds, 1e-9),
        generalization_gap=stats.accuracy - scores.accuracy,
        grad_norms=stats.grad_norms,
        skipped_steps=stats.skipped_steps,
        is_best=is_best,
        best_details=best_details(class_names, scores.confusion) if is_best else None,
    )


def derived_seed(seed: int, epoch: int, purpose: str) -> int:
    """A seed for one purpose in one epoch, independent of every other (seed, epoch, purpose)."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch seeds are signed 64-bit


def _check_architecture(spec: TrainSpec) -> None:
    """Fail on a bad architecture before spending minutes on the image cache."""
    try:
        validate_options(spec.architecture.name, spec.architecture.options)
    except ModelConfigError as exc:
        raise _spec_error(exc, spec) from None


def _spec_error(exc: ModelConfigError, spec: TrainSpec) -> SpecError:
    weights_in_hyperparameters = bool(spec.hyperparameters.pretrained_weights)
    return architecture_error(
        exc.field, exc.message, weights_in_hyperparameters=weights_in_hyperparameters
    )


def _build(
    spec: TrainSpec, num_classes: int, *, weights: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """The network: freshly initialised (from pretrained_weights if set), or holding `weights`.

    With `weights` it is built on the meta device and the tensors are adopted as they are:
    random init of 21M parameters takes longer than an epoch of a tiny test run, and the
    pretrained file of a resumed run may be gone by then.
    """
    options = dict(spec.architecture.options)
    pretrained = spec.hyperparameters.pretrained_weights or options.get("pretrained_weights")
    options["pretrained_weights"] = pretrained if weights is None else None
    try:
        if weights is None:
            return build_model(spec.architecture.name, num_classes, **options)
        with torch.device("meta"):
            model = build_model(spec.architecture.name, num_classes, **options)
    except ModelConfigError as exc:
        raise _spec_error(exc, spec) from None
    model.load_state_dict(weights, assign=True)
    return model


def _training_objects(
    model: nn.Module, spec: TrainSpec, runtime: Runtime, train_size: int
) -> TrainStep:
    hp = spec.hyperparameters
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model = model.to(runtime.device).to(memory_format=memory_format)
    # Fused kernels (by the parameters' device), and wherever fp16 scaling would otherwise
    # make a step wait for the device.
    optimizer = build_optimizer(model, hp, fused=True if runtime.fp16 else None)
    steps_per_epoch = len(batch_plan(train_size, hp.batch_size, torch.Generator()))
    ema = None
    if hp.ema_epochs is not None:
        ema = WeightEma(model, ema_decay(hp.ema_epochs, steps_per_epoch))
    return TrainStep(
        model=compiled(model) if hp.compile else model,
        base_model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, hp, steps_per_epoch),
        scaler=torch.amp.GradScaler(runtime.device.type, enabled=runtime.fp16),
        criterion=nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing),
        grad_clip=hp.grad_clip,
        runtime=runtime,
        ema=ema,
    )


def compiled(model: nn.Module) -> nn.Module:
    """`model` under torch.compile, with Dynamo's caches emptied first.

    Compiled code is cached per Python function (ResNet.forward is shared by every network),
    and each job adds its own entries (training and evaluation graphs, each network and image
    size); in a long-lived worker the cache reached `recompile_limit` after three jobs and the
    fourth ran uncompiled, with only a warning. A worker runs one job at a time, so nothing
    of an earlier job's compiled code is needed any more. Shapes are kept static instead of
    dynamic: training drops the short last batch and evaluation pads its last one
    (`evaluate(pad_to=)`), so each job compiles exactly two graphs.
    """
    torch._dynamo.reset()
    return cast(nn.Module, torch.compile(model))


def _checkpoint_state(
    step: TrainStep, spec: TrainSpec, prepared: PreparedData, history: list[EpochMetrics]
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "epoch": len(history),
        "model": step.base_model.state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scheduler": step.scheduler.state_dict(),
        "scaler": step.scaler.state_dict(),
        **({"ema": step.ema.state_dict()} if step.ema is not None else {}),
        "rng": rng_state(),
        "spec": spec.model_dump(mode="json"),
        "data": {"class_names": prepared.class_names, "split_id": prepared.split_id},
        "class_names": prepared.class_names,
        "metrics": [m.model_dump(mode="json") for m in history],
    }


def _restore(step: TrainStep, state: dict[str, Any]) -> list[EpochMetrics]:
    """Optimizer, scheduler, scaler, EMA and RNG state (the weights are already in the model).

    A run saved without loss scaling (bfloat16, float32: the scaler's state is empty) may
    resume in float16 where `precision` is auto and the new host lacks bf16: its scaler
    starts afresh."""
    # The implementation flags are this host's choice, not the saved run's: an unfused group
    # under a fused optimizer would apply steps the loss scaler meant to skip.
    kernels: list[dict[str, Any]] = [
        {key: group[key] for key in ("fused", "foreach") if key in group}
        for group in step.optimizer.param_groups
    ]
    step.optimizer.load_state_dict(state["optimizer"])
    for group, kept in zip(step.optimizer.param_groups, kernels, strict=True):
        group.update(kept)
    step.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") and step.scaler.is_enabled():
        step.scaler.load_state_dict(state["scaler"])
    if step.ema is not None:
        step.ema.load_state_dict(state["ema"])
    restore_rng_state(state["rng"])
    return history_of(state)


def _best_epoch(history: list[EpochMetrics]) -> int | None:
    best = best_epoch(history)
    return best.epoch if best is not None else None


def _patience_exhausted(history: list[EpochMetrics], patience: int | None) -> bool:
    best = _best_epoch(history)
    return patience is not None and best is not None and len(history) - best >= patience


def _ensure_bundle(
    spec: TrainSpec,
    prepared: PreparedData,
    best: EpochMetrics,
    out_dir: Path,
    num_parameters: int,
    gflops: float,
    events: CallbackList,
) -> None:
    """bundle.pt exported from best.pt, unless it already is (it names best.pt's SHA-256),
    then its row: the served model is always the best checkpoint's."""
    source = file_event(out_dir / BEST, "best", best.epoch).sha256
    if bundle_source(out_dir / BUNDLE) != source:
        events.before_write()
        # Read back from best.pt (the model in memory is the last epoch's), their moving
        # average where there is one: that is what was evaluated.
        model = _build(spec, len(prepared.class_names), weights=best_weights(out_dir / BEST))
        save_bundle(
            out_dir / BUNDLE,
            model,
            architecture=spec.architecture.model_dump(mode="json"),
            class_names=prepared.class_names,
            preprocessing={
                "image_size": prepared.image_size,
                "resize_size": prepared.resize_size,
                "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD),
            },
            metadata={
                "best_epoch": best.epoch,
                "val_accuracy": best.val_accuracy,
                "val_loss": best.val_loss,
                "num_parameters": num_parameters,
                "gflops": gflops,
                "dataset_fingerprint": prepared.fingerprint,
                "split_id": prepared.split_id,
                "checkpoint_sha256": source,
                "hyperparameters": spec.hyperparameters.model_dump(mode="json"),
            },
        )
        pause_point("bundle_saved", best.epoch)
    events.on_checkpoint(file_event(out_dir / BUNDLE, "bundle", best.epoch))
    pause_point("bundle_recorded", best.epoch)


def score_test(
    spec: TrainSpec, prepared: PreparedData, best_epoch: int, out_dir: Path, runtime: Runtime
) -> TestMetrics:
    """The best checkpoint on the held-out test images, once: the only reader of
    `prepared.test`, called after the last epoch, so nothing that trains, stops early or picks
    the checkpoint can see those images. Kept in test.json; a resumed finished run reuses it."""
    saved = out_dir / TEST
    if saved.is_file():
        stored = TestMetrics.model_validate_json(saved.read_text())
        if stored.epoch == best_epoch and stored.num_images == len(prepared.test):
            return stored
    model = _build(spec, len(prepared.class_names), weights=best_weights(out_dir / BEST))
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    model = model.to(runtime.device).to(memory_format=memory_format)
    hp = spec.hyperparameters
    transform = BatchTransform(
        image_size=hp.image_size,
        augmentation="none",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        device=runtime.device,
        channels_last=runtime.channels_last,
    )
    batches = iterate_batches(
        prepared,
        prepared.test,
        batch_plan(len(prepared.test), hp.eval_batch_size, None),
        crop=hp.image_size,
        num_workers=0,
        pin_memory=False,
    )
    scores = evaluate(
        model, batches, transform, num_classes=len(prepared.class_names), runtime=runtime
    )
    details = best_details(prepared.class_names, scores.confusion)
    test = TestMetrics(
        **details.model_dump(),
        loss=scores.loss,
        accuracy=scores.accuracy,
        num_images=len(prepared.test),
        epoch=best_epoch,
    )
    with atomic_write(saved) as handle:
        handle.write(test.model_dump_json().encode())
    return test


def best_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights a checkpoint was evaluated with: its moving average where it has one."""
    state = load_checkpoint(path)
    return state["ema"]["weights"] if "ema" in state else state["model"]


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None
