"""Helpers shared by the models tests (a unique module name: tests/ has no packages)."""

import copy
import functools

import torch

from models import ARCHITECTURES, build_model

NUM_CLASSES = 5
SIZE = 64  # small inputs keep the whole folder fast on shared CPUs
ALL_NAMES = list(ARCHITECTURES)

# At 5 classes. resnet34 is torchvision's count; the others equal timm's where timm has the
# design (see test_models_equivalence.py); plain34 = resnet34 - 173,824 projection parameters.
EXPECTED_PARAMS = {
    "plain34": 21_113_413,
    "resnet34": 21_287_237,
    "se_resnet34": 21_449_981,
    "eca_resnet34": 21_287_311,
    "preact_resnet34": 21_285_445,
    "resnet34d": 21_306_469,
}


def build(name: str, **options) -> torch.nn.Module:
    return build_model(name, NUM_CLASSES, **options)


@functools.cache
def shared(name: str, **options) -> torch.nn.Module:
    """One model per configuration for tests that only inspect it. Do not train, hook or
    edit it: use `fresh`."""
    return build(name, **options)


@functools.cache
def skeleton(name: str, **options) -> torch.nn.Module:
    """The model on the meta device: structure and shapes only, no values, built instantly."""
    with torch.device("meta"):
        return build(name, **options)


def fresh(name: str, **options) -> torch.nn.Module:
    """A private copy of `shared`: copying is ~10x faster than building (random init)."""
    return copy.deepcopy(shared(name, **options))


def randomize_norms_(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN affine and running stats, so equivalence tests exercise every branch
    (timm zero-inits the last BN of each block by default, which would hide the branches)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model
