"""torch.compile in a long-lived worker: every job runs compiled, however many came before."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from engine_testlib import tiny_spec

from core.specs import ArchitectureSpec, TrainSpec
from workers.engine import train


@pytest.mark.slow
def test_the_fourth_compiled_job_in_one_process_still_runs_compiled(
    easy_data: Path, tmp_path: Path, runs: Path, monkeypatch: pytest.MonkeyPatch
):
    """Four jobs in one process, as a worker runs them: different networks and image sizes,
    an evaluation batch that leaves a short last one. Before the fix, Dynamo's cache for
    ResNet.forward (shared by all of them) hit `recompile_limit` in the third job and the
    fourth ran uncompiled. The backend counts the calls of the compiled graphs; it is Dynamo
    (capture, guards, caching), which decides whether compiled code runs, not the backend
    (inductor would only add minutes of code generation on two shared cores)."""
    calls = [0]

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        def run(*args: object) -> object:
            calls[0] += 1
            return graph.forward(*args)

        return run

    monkeypatch.setattr(
        torch, "compile", functools.partial(torch.compile, backend=counting_backend)
    )
    # Imported here: Dynamo costs two seconds of every test collection.
    from torch._dynamo.utils import counters

    frames = counters["frames"]
    jobs = [("resnet34", 32), ("se_resnet34", 32), ("eca_resnet34", 40), ("resnet34d", 40)]
    for number, (name, size) in enumerate(jobs, start=1):
        calls[0], compiled_before = 0, frames["ok"]
        hp = tiny_spec(epochs=1, compile=True, image_size=size, eval_batch_size=3).hyperparameters
        spec = TrainSpec(architecture=ArchitectureSpec(name=name), hyperparameters=hp)
        result = train(spec, easy_data, runs / f"job{number}", cache_dir=tmp_path / "cache")
        assert result.status == "completed"
        info = torch.load(result.last_checkpoint, weights_only=True)
        assert not any(key.startswith("_orig_mod.") for key in info["model"])
        train_size = 24 - 4  # easy_data: 2 x 12 images, 20% of them for validation
        batches = train_size // hp.batch_size + math.ceil(4 / hp.eval_batch_size)
        # Every batch of every job through compiled graphs: one training graph and one
        # evaluation graph (the short evaluation batch is padded to the same shape).
        assert calls[0] == batches, f"job {number} ran {calls[0]} of {batches} batches compiled"
        assert frames["ok"] - compiled_before == 2, f"job {number}"
