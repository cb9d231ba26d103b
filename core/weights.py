"""Pretrained weights a job may start from: files of the server's weights folder, by name.

A job names a file (`"resnet34-imagenet.pth"`), never a path: the API checks the name against
FOODLAB_WEIGHTS_ROOT and the worker opens only what the same rule resolves, so a client can
neither make the worker read an arbitrary file nor probe which files exist on the server.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import SpecError

WEIGHTS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
FIELDS = ("hyperparameters.pretrained_weights", "architecture.options.pretrained_weights")


def weights_path(name: str, weights_root: Path | None, field: str) -> Path:
    """The file `name` stands for in `weights_root`; SpecError on `field` otherwise."""
    if weights_root is None:
        raise SpecError(
            field, "pretrained weights are disabled on this server (FOODLAB_WEIGHTS_ROOT is unset)"
        )
    if not WEIGHTS_NAME.fullmatch(name):
        raise SpecError(
            field,
            "give the file name of weights in the server's weights folder (letters, digits, "
            "'.', '_', '-'; at most 200 characters), not a path",
        )
    path = (weights_root / name).resolve()
    if not path.is_relative_to(weights_root.resolve()) or not path.is_file():
        raise SpecError(field, f"no weights named {name!r} in the server's weights folder")
    return path


def requested_weights(hyperparameters: dict, options: dict) -> dict[str, str]:
    """{field: name} of each place a job asks for pretrained weights."""
    asked = {
        FIELDS[0]: hyperparameters.get("pretrained_weights"),
        FIELDS[1]: options.get("pretrained_weights"),
    }
    return {field: name for field, name in asked.items() if name is not None}


def check_weights(hyperparameters: dict, options: dict, weights_root: Path | None) -> None:
    for field, name in requested_weights(hyperparameters, options).items():
        if not isinstance(name, str):
            raise SpecError(field, "give the file name as a string")
        weights_path(name, weights_root, field)
