"""Initialise a model from a torchvision-format state_dict file (parameter name -> tensor)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ModelConfigError, describe_load_failure

FIELD = "pretrained_weights"


@dataclass(frozen=True)
class PretrainedReport:
    path: str
    loaded: int  # tensors copied from the file
    skipped: tuple[str, ...]  # kept at their fresh init: a classifier for another class count

    def __str__(self) -> str:
        text = f"loaded {self.loaded} tensors from {self.path}"
        if self.skipped:
            text += f"; skipped {', '.join(self.skipped)} (class count differs, kept fresh init)"
        return text


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The file's tensors, or ModelConfigError naming the file; nothing in it is executed."""
    if not os.path.isfile(path):
        raise ModelConfigError(FIELD, f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign/corrupt/unsafe files
        raise ModelConfigError(
            FIELD, f"{path}: not a weights-only state_dict: {describe_load_failure(exc)}"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelConfigError(
            FIELD, f"{path}: expected a torchvision-format state_dict (parameter name -> tensor)"
        )
    return state


def _listing(keys: list[str], limit: int = 5) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> PretrainedReport:
    """Copy every tensor of the file into `model`, strictly, except a differently sized `fc`.

    Raises ModelConfigError (field "pretrained_weights") naming the file and the keys that do
    not match; the model is untouched in that case.
    """
    path = os.fspath(path)
    return apply_state_dict(model, read_state_dict(path), path)


def apply_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], path: str
) -> PretrainedReport:
    own = model.state_dict()
    skipped = tuple(
        k for k in state if k.startswith("fc.") and k in own and state[k].shape != own[k].shape
    )
    state = {k: v for k, v in state.items() if k not in skipped}
    problems = []
    if missing := sorted(set(own) - set(state) - set(skipped)):
        problems.append(f"missing {_listing(missing)}")
    if unexpected := sorted(set(state) - set(own)):
        problems.append(f"unexpected {_listing(unexpected)}")
    if wrong := [k for k in state if k in own and state[k].shape != own[k].shape]:
        problems.append(f"wrong shape {_listing(wrong)}")
    if problems:
        raise ModelConfigError(
            FIELD, f"{path}: does not fit this architecture: {'; '.join(problems)}"
        )
    model.load_state_dict(state, strict=False)  # strict in effect: only `skipped` is absent
    return PretrainedReport(path, len(state), skipped)
