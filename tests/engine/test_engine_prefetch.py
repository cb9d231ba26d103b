"""The reader thread: batches read ahead into reused buffers, the same bytes as before."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from engine_testlib import tiny_spec

from workers.engine import train
from workers.engine.data import BatchBuffers, batch_plan, iterate_batches, prepare_data


def _comparable(metrics) -> dict:  # noqa: ANN001
    return metrics.model_dump(
        exclude={"epoch_seconds", "train_images_per_second", "epoch_cpu_seconds", "load_average"}
    )


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "batch-reader"]


@pytest.mark.slow  # two whole trainings compared
def test_training_with_the_reader_thread_equals_training_without(
    synth_data: Path, tmp_path: Path, runs: Path, monkeypatch: pytest.MonkeyPatch
):
    spec = tiny_spec(epochs=2, augmentation="standard", momentum=0.9, lr=0.01)
    cache = tmp_path / "cache"
    prefetched = train(spec, synth_data, runs / "prefetched", cache_dir=cache)
    monkeypatch.setattr("workers.engine.data.PREFETCH_DEPTH", 0)
    inline = train(spec, synth_data, runs / "inline", cache_dir=cache)
    assert [_comparable(m) for m in prefetched.epochs] == [_comparable(m) for m in inline.epochs]
    assert not _readers()


def test_batches_are_the_same_bytes_in_reused_unpinned_buffers(synth_data: Path, tmp_path: Path):
    hp = tiny_spec().hyperparameters
    data = prepare_data(synth_data, hp, tmp_path / "cache")
    plan = batch_plan(len(data.train), 5, None)  # a short last batch
    buffers = BatchBuffers(pin=False)
    for crop in (None, 32):
        plain = [
            (images.clone(), labels.clone())
            for images, labels in iterate_batches(
                data, data.train, plan, crop=crop, num_workers=0, pin_memory=False
            )
        ]
        for _ in range(2):  # a second epoch reuses the first one's buffers
            pointers = set()
            read = iterate_batches(
                data, data.train, plan, crop=crop, num_workers=0, pin_memory=False, buffers=buffers
            )
            for (images, labels), (want_images, want_labels) in zip(read, plain, strict=True):
                assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
                assert not images.is_pinned()  # CPU training: nothing pinned
                pointers.add(images.data_ptr())
            assert len(pointers) <= 4  # depth 2 + one in use + one being filled
    assert not _readers()


def test_a_reader_error_reaches_the_training_thread_and_stopping_early_ends_the_thread(
    synth_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    hp = tiny_spec().hyperparameters
    data = prepare_data(synth_data, hp, tmp_path / "cache")
    plan = batch_plan(len(data.train), 4, None)
    buffers = BatchBuffers(pin=False)

    read = iterate_batches(
        data, data.train, plan, crop=None, num_workers=0, pin_memory=False, buffers=buffers
    )
    next(read)
    assert len(_readers()) == 1
    read.close()  # a cancelled epoch
    assert not _readers()

    def broken(self, index, slot):  # noqa: ANN001, ANN202
        if index == 2:
            raise OSError("the cache file went away")
        return original(self, index, slot)

    from workers.engine.data import _BatchReader

    original = _BatchReader.read_into
    monkeypatch.setattr(_BatchReader, "read_into", broken)
    read = iterate_batches(
        data, data.train, plan, crop=None, num_workers=0, pin_memory=False, buffers=buffers
    )
    with pytest.raises(OSError, match="went away"):
        for _ in read:
            pass
    assert not _readers()
