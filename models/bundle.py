"""The inference bundle: one file with the weights and everything needed to serve them.

The file holds only tensors, str, int, float, bool, None, lists and dicts, so it loads with
`torch.load(path, weights_only=True)`, which never runs code from the file. That is the only
way `load_bundle` reads it: a bundle may come from an upload or another machine.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from .errors import ModelConfigError, describe_load_failure
from .inference import probabilities
from .inference import top_k as ranked
from .preprocess import resize_shorter_and_center_crop, to_normalized_tensor
from .registry import build_model

FORMAT = "foodlab.bundle"
VERSION = 1
REQUIRED_KEYS = (
    "format",
    "version",
    "architecture",
    "class_names",
    "preprocessing",
    "metadata",
    "state_dict",
)


class BundleError(ValueError):
    """A bundle that cannot be written or read; the message names the file."""


class Preprocessing(BaseModel):
    # Not strict: the engine passes tuples such as IMAGENET_MEAN; they are stored as lists.
    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(ge=1)
    resize_size: int = Field(ge=1)
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)

    @model_validator(mode="after")
    def _check(self) -> Preprocessing:
        if self.resize_size < self.image_size:
            raise ValueError("resize_size must be >= image_size (the crop must fit)")
        if min(self.std) <= 0:
            raise ValueError("std must be positive")
        return self


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Bundle:
    model: nn.Module  # in eval mode
    class_names: list[str]
    preprocessing: dict[str, Any]
    architecture: dict[str, Any]
    metadata: dict[str, Any]

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        p = self.preprocessing
        crops = [
            resize_shorter_and_center_crop(img, p["resize_size"], p["image_size"]) for img in images
        ]
        return to_normalized_tensor(crops, p["mean"], p["std"])

    @torch.inference_mode()
    def predict(
        self, images: Sequence[Image.Image], top_k: int = 3
    ) -> list[list[tuple[str, float]]]:
        """Per image, the top_k (class name, probability) pairs, most probable first."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 (got {top_k})")
        if not images:
            return []
        probs = probabilities(self.model, self.preprocess(images))
        return ranked(probs, top_k, self.class_names)


def _validated(path: Path, model_cls: type[BaseModel], value: Any, what: str) -> dict[str, Any]:
    try:
        return model_cls.model_validate(value).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in (what, *err["loc"]))
        raise BundleError(f"{path}: {loc}: {err['msg']}") from None


def _json_values(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON types (tuples become lists), which weights_only can load."""
    try:
        plain = json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{path}: metadata must be JSON-serialisable ({exc})") from None
    if not isinstance(plain, dict):
        raise BundleError(f"{path}: metadata must be a dict")
    return plain


def _rebuild(path: Path, architecture: dict[str, Any], class_names: list[str]) -> nn.Module:
    """The architecture on the meta device: no memory, no wasted random init. Every tensor
    then comes from the bundle's state_dict (load_state_dict(..., assign=True))."""
    options = {k: v for k, v in architecture["options"].items() if k != "pretrained_weights"}
    try:
        with torch.device("meta"):
            return build_model(architecture["name"], len(class_names), **options)
    except ModelConfigError as exc:
        raise BundleError(f"{path}: architecture: {exc}") from None


def _check_class_names(path: Path, class_names: Any) -> list[str]:
    if (
        not isinstance(class_names, list)
        or not class_names
        or not all(isinstance(c, str) for c in class_names)
    ):
        raise BundleError(f"{path}: class_names must be a non-empty list of str")
    return list(class_names)


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Readers see the old file or the complete new one, never a partial write.

    The same steps as core.storage.atomic_write, which models may not import (it imports
    nothing of ours); keep the two alike.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_bundle(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    architecture: dict[str, Any],
    class_names: list[str],
    preprocessing: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    """Write a bundle that `load_bundle` is guaranteed to rebuild (checked before writing)."""
    path = Path(path)
    arch = _validated(path, Architecture, architecture, "architecture")
    # The weights are in the bundle; a checkpoint path would not exist where it is served.
    arch["options"].pop("pretrained_weights", None)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": arch,
        "class_names": _check_class_names(path, class_names),
        "preprocessing": _validated(path, Preprocessing, preprocessing, "preprocessing"),
        "metadata": _json_values(path, metadata),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    try:  # checks names and shapes; the throwaway meta model just borrows the tensors
        check = _rebuild(path, arch, payload["class_names"])
        check.load_state_dict(payload["state_dict"], assign=True)
    except RuntimeError as exc:
        raise BundleError(f"{path}: model does not match architecture/class_names: {exc}") from None
    _write_atomically(path, payload)


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, foreign pickle, or code the safe unpickler refused
        raise BundleError(f"{path}: not a loadable bundle: {describe_load_failure(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BundleError(f"{path}: not a foodlab bundle (no format={FORMAT!r} marker)")
    if missing := [k for k in REQUIRED_KEYS if k not in payload]:
        raise BundleError(f"{path}: bundle is missing keys: {', '.join(missing)}")
    if payload["version"] != VERSION:
        raise BundleError(f"{path}: bundle version {payload['version']!r}, expected {VERSION}")
    return payload


def load_bundle(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Bundle:
    """Rebuild the model (eval mode, on `map_location`) and its serving information."""
    path = Path(path)
    payload = _read(path, map_location)
    arch = _validated(path, Architecture, payload["architecture"], "architecture")
    class_names = _check_class_names(path, payload["class_names"])
    if not isinstance(payload["metadata"], dict) or not isinstance(payload["state_dict"], dict):
        raise BundleError(f"{path}: metadata and state_dict must be dicts")
    model = _rebuild(path, arch, class_names)
    try:
        model.load_state_dict(payload["state_dict"], strict=True, assign=True)
    except RuntimeError as exc:
        raise BundleError(f"{path}: weights do not match the architecture: {exc}") from None
    return Bundle(
        model=model.to(map_location).eval(),
        class_names=class_names,
        preprocessing=_validated(path, Preprocessing, payload["preprocessing"], "preprocessing"),
        architecture=arch,
        metadata=payload["metadata"],
    )
