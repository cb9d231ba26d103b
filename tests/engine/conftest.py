"""Tiny datasets for the engine tests; helpers live in engine_testlib."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from demo.dishes import write_dataset

# Two CPU cores are shared with other test suites; one thread each keeps runs predictable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 dishes x 12 images at 40 px, drawn once per session."""
    return write_dataset(
        tmp_path_factory.mktemp("synth") / "data", 12, 40, dishes=("bakso", "rendang", "sate")
    )


@pytest.fixture
def synth_data(synth_template: Path, tmp_path: Path) -> Path:
    """A private copy (without split manifests), so a test may add, break or lock files."""
    return Path(
        shutil.copytree(
            synth_template, tmp_path / "data", ignore=shutil.ignore_patterns(".foodlab")
        )
    )


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Path]:
    """A folder for run outputs, in RAM where there is /dev/shm: every epoch writes 100-250 MB
    of checkpoints, and writing and fsyncing them to a shared disk dominated the test time."""
    shm = Path("/dev/shm")
    folder = (
        Path(tempfile.mkdtemp(prefix="foodlab-engine-", dir=shm))
        if shm.is_dir()
        else (tmp_path / "runs")
    )
    folder.mkdir(exist_ok=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def easy_data(tmp_path: Path) -> Path:
    """Two classes a CNN separates at once: reddish vs bluish noise."""
    rng = np.random.default_rng(0)
    for name, channel in (("blue", 2), ("red", 0)):
        (tmp_path / "easy" / name).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 120, (36, 36, 3), dtype=np.uint8)
            pixels[..., channel] += 120
            Image.fromarray(pixels).save(tmp_path / "easy" / name / f"{i}.png")
    return tmp_path / "easy"
