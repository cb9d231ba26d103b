"""bench/gpu_check.sh: valid bash, and without a usable GPU it stops at once, saying so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.sh"


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def _run(tmp_path: Path, path: str, **env: str) -> subprocess.CompletedProcess:
    out = tmp_path / "results"
    environment = os.environ | {"PATH": path, "GPU_CHECK_OUT": str(out), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=environment | env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert not out.exists()  # no log, no results: nothing was measured
    return result


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has nvidia-smi")
def test_without_nvidia_smi_it_fails_cleanly(tmp_path: Path):
    result = _run(tmp_path, os.environ["PATH"])
    assert "no NVIDIA GPU here (nvidia-smi not found)" in result.stderr


@pytest.mark.slow
def test_when_torch_sees_no_gpu_it_fails_cleanly(tmp_path: Path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI (fake)'\n")
    (fake / "nvidia-smi").chmod(0o755)
    # No device visible to torch, even on a GPU host.
    result = _run(tmp_path, f"{fake}:{os.environ['PATH']}", CUDA_VISIBLE_DEVICES="")
    assert "torch sees no usable GPU" in result.stderr
    assert "Traceback" not in result.stderr
