"""On a CUDA GPU (skipped elsewhere; bench/gpu_check.sh runs them): the code paths the CPU
tests can only emulate. Written without a GPU at hand: not yet run on one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_testlib import Recorder, tiny_spec

from workers.engine import train
from workers.engine.checkpoints import LAST

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_a_run_on_the_gpu_uses_its_precision_fused_kernels_and_resumes(
    easy_data: Path, tmp_path: Path, runs: Path
):
    recorder = Recorder()
    spec = tiny_spec(epochs=1, device="cuda", augmentation="standard")
    result = train(spec, easy_data, runs / "run", callbacks=[recorder], cache_dir=tmp_path / "c")
    info = recorder.of("run_start")[0]
    assert result.status == "completed" and info.device.startswith("cuda:")
    native_bf16 = torch.cuda.get_device_capability() >= (8, 0)
    assert info.precision == ("bfloat16" if native_bf16 else "float16")
    state = torch.load(runs / "run" / LAST, weights_only=True)
    assert all(group["fused"] for group in state["optimizer"]["param_groups"])
    assert set(state["rng"]) == {"torch"}  # no per-GPU generator states
    longer = tiny_spec(epochs=2, device="cuda", augmentation="standard")
    resumed = train(longer, easy_data, runs / "run", cache_dir=tmp_path / "c")
    assert [m.epoch for m in resumed.epochs] == [1, 2]


def test_no_training_step_waits_for_the_gpu(
    easy_data: Path, tmp_path: Path, runs: Path, monkeypatch: pytest.MonkeyPatch
):
    """torch.cuda.set_sync_debug_mode("error") while the middle batches of an epoch run (the
    first warms up, the last ends in the progress report's one sync): a sync raises."""
    from workers.engine import data as engine_data

    reading = engine_data.iterate_batches

    def strict(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        batches = [
            (images.clone().pin_memory(), labels.clone().pin_memory())
            for images, labels in reading(*args, **kwargs)
        ]
        for index, batch in enumerate(batches):
            torch.cuda.set_sync_debug_mode("error" if 0 < index < len(batches) - 1 else 0)
            yield batch
        torch.cuda.set_sync_debug_mode(0)

    monkeypatch.setattr("workers.engine.run.iterate_batches", strict)
    spec = tiny_spec(epochs=1, device="cuda", batch_size=4, augmentation="standard")
    try:
        result = train(spec, easy_data, runs / "run", cache_dir=tmp_path / "c")
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert result.status == "completed"
