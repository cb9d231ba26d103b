"""Checkpoints: everything needed to resume a run, in a file torch loads with weights_only=True.

A checkpoint holds state dicts (model, optimizer, scheduler, grad scaler), the CPU RNG state,
the spec as a JSON-able dict, what identifies the data, and the metrics so far. It is written
(off the training thread) to a temporary file and renamed into place
(core.storage.atomic_write), so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import torch

from core.faults import pause_point
from core.specs import EpochMetrics, SpecError, TrainSpec
from core.storage import atomic_write, fsync_dir, sha256_of

from .callbacks import (
    BatchProgress,
    CallbackList,
    CheckpointEvent,
    CheckpointKind,
    TrainingCallback,
)

LAST, BEST, BUNDLE = "last.pt", "best.pt", "bundle.pt"
FORMAT = "foodlab.checkpoint"
VERSION = 1

# Hyperparameters a resumed run may change: they do not alter what the epochs done so far mean.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "early_stopping_patience", "num_workers", "compile", "device", "eval_batch_size"}
)


class _HashingWriter:
    """Hashes bytes on their way to the file, so a checkpoint is not read back to hash it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def save_checkpoint(
    path: Path, state: dict[str, Any], kind: CheckpointKind, epoch: int
) -> CheckpointEvent:
    with atomic_write(path) as handle:
        writer = _HashingWriter(handle)
        torch.save(state, cast(BinaryIO, writer))  # torch.save only calls write()
    return CheckpointEvent(kind, path, epoch, writer.size, writer.digest.hexdigest())


def copy_checkpoint(source: CheckpointEvent, path: Path, kind: CheckpointKind) -> CheckpointEvent:
    """`source` under a second name (a hard link when possible), replacing `path` atomically.

    The best epoch is usually the latest one, and a link saves writing the same bytes twice;
    the next `last.pt` is a new file, so the link keeps the old content.
    """
    staging = path.with_name(f".{path.name}.link")
    staging.unlink(missing_ok=True)
    try:
        os.link(source.path, staging)
    except OSError:  # file systems without hard links
        with atomic_write(staging) as handle:
            handle.write(source.path.read_bytes())
    os.replace(staging, path)
    return CheckpointEvent(kind, path, source.epoch, source.size_bytes, source.sha256)


def file_event(path: Path, kind: CheckpointKind, epoch: int) -> CheckpointEvent:
    return CheckpointEvent(kind, path, epoch, path.stat().st_size, sha256_of(path))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents; tensors are memory-mapped, so reading only the model
    weights (for the bundle) does not read the optimizer state from disk."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # corrupt or foreign file: tell the user which one
        raise SpecError("out_dir", f"{path} is not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SpecError("out_dir", f"{path} is not a foodlab checkpoint")
    return state


def rng_state() -> dict[str, Any]:
    """The CPU generator only. Every epoch reseeds torch (CPU and every GPU) from (seed,
    epoch), so no GPU generator state is needed to resume, and storing one per visible GPU
    made a checkpoint unloadable on a host that sees fewer GPUs."""
    return {"torch": torch.get_rng_state()}


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restores the CPU generator; a "cuda" entry (written by older versions) is ignored:
    its per-GPU states cannot be restored where fewer GPUs are visible, and are overwritten
    by the next epoch's seeding anyway."""
    torch.set_rng_state(state["torch"])


def history_of(state: dict[str, Any]) -> list[EpochMetrics]:
    return [EpochMetrics.model_validate(m) for m in state["metrics"]]


def check_resumable(
    state: dict[str, Any], spec: TrainSpec, data_identity: dict[str, Any], path: Path
) -> None:
    """Refuse to continue a run whose architecture, data or training recipe differ."""
    stored = TrainSpec.model_validate(state["spec"])
    if stored.architecture != spec.architecture:
        raise SpecError(
            "architecture",
            f"{path} was trained as {stored.architecture.name} "
            f"{stored.architecture.options}; use another output folder",
        )
    for field, old in stored.hyperparameters.model_dump().items():
        new = getattr(spec.hyperparameters, field)
        if field not in RESUMABLE_CHANGES and new != old:
            raise SpecError(
                f"hyperparameters.{field}",
                f"{path} was trained with "
                f"{field}={old!r}, not {new!r}; use the same value or another folder",
            )
    for key, old in state["data"].items():
        if data_identity.get(key) != old:
            raise SpecError(
                "data",
                f"{path} was trained on other data ({key} differs); use another output folder",
            )
    done = len(state["metrics"])
    if spec.hyperparameters.epochs < done:
        raise SpecError(
            "hyperparameters.epochs", f"{path} already has {done} epochs; ask for at least {done}"
        )


def snapshot(state: Any) -> Any:
    """`state` with every tensor copied to the CPU: the live weights and optimiser state move
    on with the next epoch while the copy is being written."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: snapshot(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(snapshot(value) for value in state)
    return state


class CheckpointWriter:
    """Writes one checkpoint at a time on a background thread: torch.save, hashing and fsync
    into a temporary file beside the target, while training goes on. The file becomes the
    checkpoint only by `commit`, on the training thread, after the writer's claim on the job
    has been checked (`before_write`): a worker that lost its claim meanwhile leaves nothing
    but a temporary file, which `remove_partial_files` clears. An error in the thread is
    raised by `wait`."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._staged: tuple[Path, CheckpointEvent] | None = None
        self._error: BaseException | None = None

    def submit(self, path: Path, state: dict[str, Any], kind: CheckpointKind, epoch: int) -> None:
        if self._thread is not None:
            raise RuntimeError("a checkpoint write is already in flight")

        def write() -> None:
            try:
                self._staged = _write_staged(path, state, kind, epoch)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc

        self._thread = threading.Thread(target=write, name=f"checkpoint-{epoch}", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pending(self) -> bool:
        return self._thread is not None

    def wait(self) -> tuple[Path, CheckpointEvent] | None:
        """Join the write in flight: (its temporary file, the event of the checkpoint it will
        be), or None when none was in flight."""
        if self._thread is None:
            return None
        self._thread.join()
        staged, error = self._staged, self._error
        self._thread, self._staged, self._error = None, None, None
        if error is not None:
            raise error
        return staged

    def discard(self) -> None:
        """Join the write in flight and remove its temporary file (errors ignored)."""
        try:
            staged = self.wait()
        except Exception:  # noqa: BLE001 - an error already on its way matters more
            return
        if staged is not None:
            staged[0].unlink(missing_ok=True)


def _write_staged(
    path: Path, state: dict[str, Any], kind: CheckpointKind, epoch: int
) -> tuple[Path, CheckpointEvent]:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            writer = _HashingWriter(handle)
            torch.save(state, cast(BinaryIO, writer))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), CheckpointEvent(kind, path, epoch, writer.size, writer.digest.hexdigest())


def commit_staged(staged: Path, event: CheckpointEvent) -> CheckpointEvent:
    """The staged file renamed into place, durably."""
    os.replace(staged, event.path)
    fsync_dir(event.path.parent)
    return event


class CheckpointSchedule:
    """When the full resumable checkpoint is written: the best epochs and the run's last
    always, others once `every_seconds` have passed since the last write (0: every epoch)."""

    def __init__(self, every_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_seconds, self.clock = every_seconds, clock
        self.last_write = clock()

    def due(self, metrics: EpochMetrics, *, final: bool) -> bool:
        return (
            metrics.is_best
            or final
            or self.every_seconds <= 0
            or self.clock() - self.last_write >= self.every_seconds
        )

    def written(self) -> None:
        self.last_write = self.clock()


class EpochSaver(TrainingCallback):
    """An epoch's files and rows, in the order `recover_checkpoints` can always complete.

    For a checkpointed epoch: last.pt (written off the training thread), its row, then (for a
    new best epoch) best.pt and its row, then the epoch's metrics. A crash between any two
    steps leaves last.pt holding every epoch up to the last one written, and the rows behind
    the files: the resumed run re-reports both and redoes the epochs after it, whose rows are
    upserted again (one row per epoch). A best epoch's row is never recorded before its
    checkpoint: the served model is always the best row's. The rows of the epochs between
    checkpoints are recorded at once, or after the write in flight when there is one, so rows
    stay in epoch order. Each named point may pause a test worker (core.faults).
    """

    def __init__(
        self,
        out_dir: Path,
        events: CallbackList,
        schedule: CheckpointSchedule,
        *,
        background: bool = True,
    ) -> None:
        self.out_dir, self.events, self.schedule = out_dir, events, schedule
        self.background = background  # False: each write is committed before epoch_done returns
        self.writer = CheckpointWriter()
        self.in_flight: EpochMetrics | None = None  # the epoch whose last.pt is being written
        self.waiting: list[EpochMetrics] = []  # later epochs, recorded after it

    def epoch_done(
        self, metrics: EpochMetrics, state: Callable[[], dict[str, Any]], *, final: bool
    ) -> None:
        """Record `metrics`, and checkpoint `state()` if the schedule says so (or it is the best
        or `final` epoch)."""
        if self.schedule.due(metrics, final=final):
            self.finish()  # at most one write in flight
            self.writer.submit(self.out_dir / LAST, snapshot(state()), "last", metrics.epoch)
            self.schedule.written()
            self.in_flight = metrics
            if not self.background:
                self.finish()
        elif self.writer.busy:
            self.waiting.append(metrics)
        else:
            self.finish()
            self._record(metrics)

    def finish(self) -> None:
        """Wait for the write in flight, then record its files and the rows behind it."""
        metrics, self.in_flight = self.in_flight, None
        if metrics is None:
            return
        staged = self.writer.wait()
        assert staged is not None
        epoch = metrics.epoch
        try:
            self.events.before_write()  # the claim, checked just before the file appears
        except BaseException:
            staged[0].unlink(missing_ok=True)
            raise
        last = commit_staged(*staged)
        pause_point("last_saved", epoch)
        self.events.on_checkpoint(last)
        pause_point("last_recorded", epoch)
        if metrics.is_best:
            self.events.before_write()
            best = copy_checkpoint(last, self.out_dir / BEST, "best")
            pause_point("best_saved", epoch)
            self.events.on_checkpoint(best)
            pause_point("best_recorded", epoch)
        self._record(metrics)
        waiting, self.waiting = self.waiting, []
        for later in waiting:
            self._record(later)

    def on_batch_end(self, progress: BatchProgress) -> None:
        """Between batches: a finished write's files and rows are recorded at once, not at
        the next checkpoint (the rows of the epoch before stay live)."""
        if self.in_flight is not None and not self.writer.busy:
            self.finish()

    def close(self) -> None:
        """On an error: the write in flight is of an epoch that completed, so it still becomes
        the checkpoint with its rows (a job that diverges in epoch 2 keeps epoch 1's), unless
        the write itself failed or the claim is lost: then it is dropped and the last
        committed checkpoint stays. Nothing more is recorded."""
        try:
            self.finish()
        except Exception:  # noqa: BLE001 - the error that ended the run matters more
            self.writer.discard()
        self.in_flight, self.waiting = None, []

    def _record(self, metrics: EpochMetrics) -> None:
        self.events.on_epoch_end(metrics)
        pause_point("epoch_recorded", metrics.epoch)


def recover_checkpoints(out_dir: Path, best_epoch: int, done: int, events: CallbackList) -> None:
    """On resume: make best.pt the checkpoint of `best_epoch` (the best in last.pt's history
    of `done` epochs) and re-report both files, so their rows match what is on disk.

    A crash after a new best epoch's last.pt but before its best.pt leaves best.pt one best
    behind; last.pt then is the best epoch's checkpoint, and is linked again.
    """
    last = file_event(out_dir / LAST, "last", done)
    if checkpoint_epoch(out_dir / BEST) != best_epoch:
        if best_epoch != done:
            raise SpecError(
                "out_dir",
                f"{out_dir / BEST} does not hold epoch {best_epoch}, the "
                "best one, and last.pt has moved past it; use another output folder",
            )
        events.before_write()
        copy_checkpoint(last, out_dir / BEST, "best")
    events.on_checkpoint(last)
    events.on_checkpoint(file_event(out_dir / BEST, "best", best_epoch))


def checkpoint_epoch(path: Path) -> int | None:
    """The number of epochs a checkpoint holds; None when there is no readable one."""
    if not path.is_file():
        return None
    try:
        return int(load_checkpoint(path)["epoch"])
    except SpecError:
        return None


def bundle_source(path: Path) -> str | None:
    """The SHA-256 of the checkpoint a bundle was exported from (None: no bundle, or older)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return payload["metadata"].get("checkpoint_sha256")
    except Exception:  # noqa: BLE001 - a torn or foreign bundle is simply exported again
        return None


def remove_partial_files(out_dir: Path) -> list[Path]:
    """Temporary files that an interrupted write left behind (atomic_write, copy_checkpoint,
    save_bundle name them `.<name>.*.tmp` or `.<name>.link`)."""
    partial = [*out_dir.glob(".*.tmp"), *out_dir.glob(".*.link")]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial
