"""What a checkpoint holds, how often it is written, and that resume stays exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_testlib import Recorder, tiny_spec

from core.storage import sha256_of
from models import load_bundle
from workers.engine import train
from workers.engine.checkpoints import (
    BEST,
    LAST,
    CheckpointSchedule,
    CheckpointWriter,
    commit_staged,
    snapshot,
)
from workers.engine.run import checkpoint_interval, checkpoints_in_background
from workers.engine.runtime import Runtime


def _comparable(metrics) -> dict:  # noqa: ANN001
    # Timings and the machine's load vary between runs; everything else must be equal.
    return metrics.model_dump(
        exclude={"epoch_seconds", "train_images_per_second", "epoch_cpu_seconds", "load_average"}
    )


@pytest.mark.slow
def test_a_checkpoint_with_gpu_generator_states_resumes_and_new_ones_carry_none(
    easy_data: Path, tmp_path: Path, runs: Path, monkeypatch: pytest.MonkeyPatch
):
    """Older versions stored one CUDA generator state per visible GPU, which a host seeing
    fewer GPUs cannot restore; every epoch reseeds them anyway."""
    run, cache = runs / "run", tmp_path / "cache"
    # A host where CUDA looks available (training itself on the CPU): the engine must neither
    # save nor restore GPU generator states, which would fail here.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    first = train(tiny_spec(epochs=1, device="cpu"), easy_data, run, cache_dir=cache)
    state = torch.load(run / LAST, weights_only=True)
    assert set(state["rng"]) == {"torch"}
    # As an 8-GPU host wrote it: restoring these where no GPU is visible would fail.
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(8)]
    torch.save(state, run / LAST)

    resumed = train(tiny_spec(epochs=2, device="cpu"), easy_data, run, cache_dir=cache)

    assert resumed.status == "completed" and [m.epoch for m in resumed.epochs] == [1, 2]
    assert resumed.epochs[0] == first.epochs[0]
    assert set(torch.load(run / LAST, weights_only=True)["rng"]) == {"torch"}


class _Crash(Exception):
    """Stands in for a killed worker."""


class _Clock(Recorder):
    """A fake clock in which every epoch takes 10 s (the time is 10 x the epoch in progress),
    and optionally a crash at the first batch of an epoch."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.epoch, self.crash_at = 0, crash_at

    def on_batch_end(self, progress):  # noqa: ANN001, ANN201
        super().on_batch_end(progress)
        self.epoch = progress.epoch
        if progress.epoch == self.crash_at:
            raise _Crash

    def __call__(self) -> float:
        return 10.0 * self.epoch


def _expected_writes(epochs: list, every: float, first: int = 1, start: float = 0.0) -> list[int]:
    """The schedule's rule: best and last epochs, others once `every` seconds have passed."""
    written, last_write = [], start
    for metrics in epochs[first - 1 :]:
        now = 10.0 * metrics.epoch
        if metrics.is_best or metrics.epoch == len(epochs) or now - last_write >= every:
            written.append(metrics.epoch)
            last_write = now
    return written


def _train_with(clock: _Clock, spec, data: Path, run: Path, cache: Path, monkeypatch):  # noqa: ANN001, ANN202
    monkeypatch.setattr(
        "workers.engine.run.CheckpointSchedule",
        lambda every: CheckpointSchedule(every, clock=clock),
    )
    return train(spec, data, run, callbacks=[clock], cache_dir=cache, checkpoint_seconds=25)


@pytest.mark.slow
@pytest.mark.parametrize("background", [True, False], ids=["background", "in-line"])
def test_checkpoints_follow_the_clock_keep_best_and_last_and_resume_exactly(
    easy_data: Path, tmp_path: Path, runs: Path, monkeypatch: pytest.MonkeyPatch, background: bool
):
    # In the background as on a GPU, in line as on the CPU: the same files and rows.
    monkeypatch.setattr("workers.engine.run.checkpoints_in_background", lambda _: background)
    spec, cache = tiny_spec(epochs=6, lr=1e-4), tmp_path / "cache"
    clock = _Clock()
    whole = _train_with(clock, spec, easy_data, runs / "whole", cache, monkeypatch)

    writes = [event.epoch for event in clock.of("checkpoint") if event.kind == "last"]
    assert writes == _expected_writes(whole.epochs, 25)
    skipped = sorted(set(range(1, 7)) - set(writes))
    assert skipped, "every epoch was a new best: the test data needs non-best epochs"
    bests = [m.epoch for m in whole.epochs if m.is_best]
    assert [e.epoch for e in clock.of("checkpoint") if e.kind == "best"] == bests
    assert set(bests) | {6} <= set(writes)
    assert torch.load(runs / "whole" / LAST, weights_only=True)["epoch"] == 6
    assert torch.load(runs / "whole" / BEST, weights_only=True)["epoch"] == whole.best_epoch
    assert load_bundle(whole.bundle).metadata["best_epoch"] == whole.best_epoch
    # Each epoch recorded once, after its checkpoint when it has one.
    assert [m.epoch for m in clock.of("epoch")] == list(range(1, 7))
    order = [
        (name, getattr(value, "kind", "metrics"), value.epoch)
        for name, value in clock.events
        if name in ("checkpoint", "epoch")
    ]
    for epoch in writes:
        assert order.index(("checkpoint", "last", epoch)) < order.index(("epoch", "metrics", epoch))

    # A crash in the epoch after a skipped one: last.pt is older than the recorded rows.
    crash_at = skipped[0] + 1
    crashed = _Clock(crash_at=crash_at)
    with pytest.raises(_Crash):
        _train_with(crashed, spec, easy_data, runs / "split", cache, monkeypatch)
    saved = torch.load(runs / "split" / LAST, weights_only=True)["epoch"]
    assert saved < skipped[0] < crash_at
    assert [m.epoch for m in crashed.of("epoch")] == list(range(1, crash_at))

    again = _Clock()
    resumed = _train_with(again, spec, easy_data, runs / "split", cache, monkeypatch)
    info = again.of("run_start")[0]
    assert info.start_epoch == saved + 1  # the epochs since the last checkpoint are redone
    assert [m.epoch for m in again.of("epoch")] == list(range(saved + 1, 7))
    assert [_comparable(m) for m in resumed.epochs] == [_comparable(m) for m in whole.epochs]
    # Rows as a database keeps them (upserted per epoch): each epoch once, as uninterrupted.
    rows = {
        m.epoch: _comparable(m) for m in [*info.history, *crashed.of("epoch"), *again.of("epoch")]
    }
    assert rows == {m.epoch: _comparable(m) for m in whole.epochs}
    assert torch.load(runs / "split" / BEST, weights_only=True)["epoch"] == whole.best_epoch


def test_checkpoint_errors_surface_and_one_write_at_a_time(tmp_path: Path):
    writer = CheckpointWriter()
    (tmp_path / "a-file").write_text("")  # no folder can be made here
    writer.submit(tmp_path / "a-file" / "last.pt", {"format": "x"}, "last", 1)
    with pytest.raises(RuntimeError, match="already in flight"):
        writer.submit(tmp_path / "other.pt", {}, "last", 2)
    with pytest.raises(OSError):
        writer.wait()
    writer.submit(tmp_path / "last.pt", {"weights": torch.ones(3)}, "last", 2)
    staged = writer.wait()
    assert staged is not None and not (tmp_path / "last.pt").exists()  # not before commit
    event = commit_staged(*staged)
    assert event.epoch == 2 and event.size_bytes == (tmp_path / "last.pt").stat().st_size
    assert event.sha256 == sha256_of(tmp_path / "last.pt")
    assert torch.load(tmp_path / "last.pt", weights_only=True)["weights"].tolist() == [1, 1, 1]
    assert not list(tmp_path.glob(".*.tmp"))  # written aside, renamed into place
    writer.submit(tmp_path / "last.pt", {"weights": torch.zeros(3)}, "last", 3)
    writer.discard()  # a run that failed meanwhile: the committed checkpoint stays
    assert torch.load(tmp_path / "last.pt", weights_only=True)["weights"].tolist() == [1, 1, 1]
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_default_interval_is_every_epoch_on_the_cpu_and_30_s_on_a_gpu():
    cpu = Runtime(torch.device("cpu"), None, channels_last=False, sync_every=1)
    gpu = Runtime(torch.device("cuda", 0), torch.bfloat16, channels_last=True, sync_every=25)
    assert checkpoint_interval(cpu, None) == 0 and checkpoint_interval(gpu, None) == 30
    assert checkpoints_in_background(gpu) and not checkpoints_in_background(cpu)
    assert checkpoint_interval(gpu, 5) == 5 and checkpoint_interval(cpu, 60) == 60
    snap = snapshot({"w": (weights := torch.ones(2)), "n": [torch.zeros(1)], "k": 3})
    weights += 1  # the live tensor moves on; the snapshot does not
    assert snap["w"].tolist() == [1, 1] and snap["k"] == 3


@pytest.mark.slow
def test_on_the_cpu_an_epochs_row_lands_before_the_next_epoch_trains(
    easy_data: Path, tmp_path: Path, runs: Path
):
    """What a search's pruner and early stopping read: epoch 1's metrics reach the callbacks
    before epoch 2's first batch (a background write could hold them past a tiny epoch)."""
    recorder = Recorder()
    train(tiny_spec(epochs=2), easy_data, runs / "run", callbacks=[recorder], cache_dir=tmp_path)
    order = [
        (name, value.epoch)
        for name, value in recorder.events
        if name in ("epoch", "batch") and value.epoch <= 2
    ]
    assert order.index(("epoch", 1)) < order.index(("batch", 2))
