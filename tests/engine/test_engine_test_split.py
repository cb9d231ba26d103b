"""The held-out test part: scored once by the best checkpoint, never read while training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from engine_testlib import tiny_spec
from PIL import Image

from models import load_bundle
from models.inference import probabilities
from workers.engine import data as engine_data
from workers.engine import run as engine_run
from workers.engine import train


@pytest.mark.slow
def test_training_never_reads_a_test_image_and_the_stored_score_is_the_best_checkpoints(
    synth_data: Path, tmp_path: Path, runs: Path, monkeypatch: pytest.MonkeyPatch
):
    scoring = [False]
    rows_read = {False: set(), True: set()}  # by whether the final test scoring was running
    read_batch = engine_data._BatchReader.__getitem__
    read_ahead = engine_data._BatchReader.read_into  # the reader thread's way in

    def spying_read(reader, index):  # noqa: ANN001, ANN202 - the patched method's signature
        rows_read[scoring[0]].update(reader.subset.rows[reader.plan[index]].tolist())
        return read_batch(reader, index)

    def spying_read_ahead(reader, index, slot):  # noqa: ANN001, ANN202
        rows_read[scoring[0]].update(reader.subset.rows[reader.plan[index]].tolist())
        return read_ahead(reader, index, slot)

    score_test = engine_run.score_test

    def flagged_score_test(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        scoring[0] = True
        try:
            return score_test(*args, **kwargs)
        finally:
            scoring[0] = False

    monkeypatch.setattr(engine_data._BatchReader, "__getitem__", spying_read)
    monkeypatch.setattr(engine_data._BatchReader, "read_into", spying_read_ahead)
    monkeypatch.setattr(engine_run, "score_test", flagged_score_test)
    # float32: the bundle is evaluated below in float32; under `auto` a CPU with native bf16
    # would score in bf16 during training, and a borderline image may flip between the two.
    spec = tiny_spec(test_fraction=0.25, early_stopping_patience=1, epochs=3, precision="float32")
    result = train(spec, synth_data, runs / "run", cache_dir=tmp_path / "cache")

    prepared = engine_data.prepare_data(synth_data, spec.hyperparameters, tmp_path / "cache")
    test_rows = set(prepared.test.rows.tolist())
    assert len(test_rows) == 9  # 3 of 12 per class
    assert rows_read[False] and not rows_read[False] & test_rows  # training, early stop, choice
    assert rows_read[True] == test_rows  # the spy sees reads: scoring read exactly the test part
    test = result.test
    assert test is not None and test.epoch == result.best_epoch and test.num_images == 9

    # A fresh evaluation through another path: the exported bundle, the files decoded by PIL.
    bundle = load_bundle(runs / "run" / "bundle.pt")
    assert bundle.metadata["best_epoch"] == result.best_epoch
    manifest = json.loads(next((tmp_path / "cache" / "splits").rglob("*test0.25*")).read_text())
    images = [Image.open(synth_data / name) for name in manifest["test"]]
    labels = torch.tensor(
        [bundle.class_names.index(name.split("/")[0]) for name in manifest["test"]]
    )
    probs = probabilities(bundle.model, bundle.preprocess(images))
    predicted = probs.argmax(dim=1)
    confusion = [
        [int(((labels == t) & (predicted == p)).sum()) for p in range(3)] for t in range(3)
    ]
    assert test.confusion_matrix == confusion
    assert test.accuracy == pytest.approx(float((predicted == labels).float().mean()))
    assert test.loss == pytest.approx(float(F.nll_loss(probs.log(), labels)), rel=1e-4)
    assert set(test.per_class_accuracy) == set(bundle.class_names)

    # Resuming the finished run scores nothing again: the stored result is reused.
    monkeypatch.setattr(engine_run, "evaluate", lambda *a, **k: pytest.fail("scored twice"))
    again = train(spec, synth_data, runs / "run", cache_dir=tmp_path / "cache")
    assert again.test == test


@pytest.mark.slow
def test_without_a_test_part_nothing_is_held_out(synth_data: Path, tmp_path: Path, runs: Path):
    result = train(tiny_spec(epochs=1), synth_data, runs / "run", cache_dir=tmp_path / "cache")
    assert result.test is None and not (runs / "run" / "test.json").exists()
