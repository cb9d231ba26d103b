"""What a checkpoint holds, how often it is written, and that resume stays exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_testlib import tiny_spec

from workers.engine import train
from workers.engine.checkpoints import LAST


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
