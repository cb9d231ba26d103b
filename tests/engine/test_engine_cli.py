"""`foodlab train` and `foodlab dataset`, through typer's CliRunner."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from cli.train import hyperparameter_overrides, parse_architecture_options

runner = CliRunner()


def invoke(*args: str):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def test_synth_writes_a_folder_and_a_zip(tmp_path: Path):
    result = invoke("dataset", "synth", "--out", tmp_path / "d", "--per-class", 2, "--size", 24)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "d").rglob("*.jpg"))) == 10
    result = invoke(
        "dataset", "synth", "--out", tmp_path / "d", "--per-class", 2, "--size", 24, "--zip"
    )
    assert result.exit_code == 0, result.output
    assert len(zipfile.ZipFile(tmp_path / "d.zip").namelist()) == 10


@pytest.mark.slow
def test_train_then_resume_with_more_epochs(synth_template: Path, tmp_path: Path, runs: Path):
    common = (
        "train",
        "--arch",
        "resnet34",
        "--data",
        synth_template,
        "--preset",
        "reference",
        "--image-size",
        32,
        "--batch-size",
        8,
        "--out",
        runs / "run",
        "--cache-dir",
        tmp_path / "cache",
    )
    first = invoke(*common, "--epochs", 1)
    assert first.exit_code == 0, first.output
    assert "completed: 1 epoch(s)" in first.output
    second = invoke(*common, "--epochs", 2)
    assert second.exit_code == 0, second.output
    assert "resuming after epoch 1" in second.output and "completed: 2 epoch(s)" in second.output
    assert torch.load(runs / "run" / "last.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--lr", "-1"), "error: hyperparameters.lr: Input should be greater than 0"),
        (("--optimizer", "rmsprop"), "error: hyperparameters.optimizer: Input should be"),
        (("--epochs", "lots"), "error: hyperparameters.epochs: Input should be a valid integer"),
        (("--arch", "resnet1000"), "error: architecture.name: unknown architecture"),
        (("--option", "attn=fancy"), "error: architecture.options.attn:"),
        (("--option", "attn"), "error: --option: expected key=value"),
        (("--preset", "best"), "error: preset: unknown preset 'best'"),
        (("--data", "/no/such/folder"), "error: /no/such/folder: no such file or folder"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    synth_template: Path, tmp_path: Path, flags: tuple[str, ...], message: str
):
    args = [
        "train",
        "--data",
        synth_template,
        "--out",
        tmp_path / "run",
        "--cache-dir",
        tmp_path / "cache",
        "--image-size",
        "32",
        *flags,
    ]
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_flags_parse_into_overrides():
    assert hyperparameter_overrides({"grad_clip": "none", "lr": "0.1", "nesterov": None}) == {
        "grad_clip": None,
        "lr": "0.1",
    }
    assert hyperparameter_overrides({"augmentation": "none"}) == {"augmentation": "none"}
    assert parse_architecture_options(["attn=se", "drop_path_rate=0.1", "deep_stem=true"]) == {
        "attn": "se",
        "drop_path_rate": 0.1,
        "deep_stem": True,
    }
