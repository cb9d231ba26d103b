"""The architecture registry: named presets of one ResNet-34 family, plus validated options.

Every preset is a set of option values; every option combines with every preset (except the
few combinations `_CONFLICTS` rejects because they would mean nothing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from .errors import ModelConfigError
from .layers import ACT_LAYERS, ATTN_LAYERS
from .pretrained import apply_state_dict, read_state_dict
from .resnet import BLOCKS, ResNet

logger = logging.getLogger(__name__)

LAYERS = (3, 4, 6, 3)  # every registered network has ResNet-34's depth


class ModelOptions(BaseModel):
    """Options of `build_model`; a preset only changes their defaults."""

    # strict: the API passes JSON through, and "1" or 1 silently becoming True hides mistakes.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    residual: bool = Field(True, description="add the shortcut; False = plain network")
    preact: bool = Field(False, description="pre-activation blocks (BN-act-conv)")
    attn: Literal["none", "se", "eca"] = Field("none", description="channel attention per block")
    deep_stem: bool = Field(False, description="three 3x3 convs (32, 32, 64) instead of 7x7")
    avg_down: bool = Field(False, description="2x2 avg-pool before the 1x1 projection shortcut")
    act: Literal["relu", "silu", "gelu", "mish"] = Field("relu", description="activation")
    drop_path_rate: float = Field(
        0.0, ge=0, lt=1, description="stochastic depth rate of the last block (linear from 0)"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")
    zero_init_residual: bool = Field(False, description="zero the last BN gamma of each block")
    pretrained_weights: str | None = Field(
        None, description="path to a torchvision-format state_dict to initialise from"
    )

    @field_validator("pretrained_weights", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value


# Valid types but meaningless together: (field to blame, test, why).
_CONFLICTS: tuple[tuple[str, Callable[[ModelOptions], bool], str], ...] = (
    (
        "avg_down",
        lambda o: o.avg_down and not o.residual,
        "needs residual=True: a plain network has no projection shortcut to average-pool",
    ),
    (
        "drop_path_rate",
        lambda o: o.drop_path_rate > 0 and not o.residual,
        "needs residual=True: dropping a plain block's output would cut the network",
    ),
    (
        "zero_init_residual",
        lambda o: o.zero_init_residual and not o.residual,
        "needs residual=True: zeroing a plain block's last BN makes the output constant",
    ),
)


@dataclass(frozen=True)
class ArchitectureInfo:
    name: str
    description: str
    default_options: dict[str, Any]  # every option, with this preset's values
    timm_equivalent: str | None  # timm model of the same design (equal parameter count)


def _preset(
    name: str, description: str, timm: str | None = None, **overrides: Any
) -> ArchitectureInfo:
    return ArchitectureInfo(name, description, ModelOptions(**overrides).model_dump(), timm)


ARCHITECTURES: dict[str, ArchitectureInfo] = {
    info.name: info
    for info in (
        _preset(
            "plain34",
            "Plain 34-layer net (He et al. 2015): ResNet-34 with nothing added to the block "
            "output, hence no projection convolutions either.",
            residual=False,
        ),
        _preset(
            "resnet34",
            "ResNet-34 (He et al. 2015): identity shortcuts, 1x1 conv+BN projection where the "
            "shape changes. Identical to torchvision resnet34 and timm resnet34.",
            timm="resnet34",
        ),
        _preset(
            "se_resnet34",
            "ResNet-34 + squeeze-and-excitation (reduction 16) on each residual branch. "
            "Same design as timm seresnet34.",
            timm="seresnet34",
            attn="se",
        ),
        _preset(
            "eca_resnet34",
            "ResNet-34 + efficient channel attention (1-D conv over channels, adaptive kernel "
            "3 or 5) on each residual branch. timm has no ECA-ResNet-34; same as timm resnet34 "
            "with block_args={'attn_layer': 'eca'}.",
            attn="eca",
        ),
        _preset(
            "preact_resnet34",
            "Pre-activation ResNet-34 (He et al. 2016): BN-act-conv blocks, BN+act before "
            "pooling, no BN in stem and projections. Same design as timm resnetv2_34.",
            timm="resnetv2_34",
            preact=True,
        ),
        _preset(
            "resnet34d",
            "ResNet-34-D (He et al. 2019): deep 3x3 stem (32, 32, 64) and 2x2 avg-pool before "
            "the 1x1 projection shortcut. Same design as timm resnet34d.",
            timm="resnet34d",
            deep_stem=True,
            avg_down=True,
        ),
    )
}


def _error_from(exc: ValidationError) -> ModelConfigError:
    """The first pydantic error as a ModelConfigError naming the field and what is allowed."""
    err = exc.errors()[0]
    field = ".".join(str(part) for part in err["loc"]) or "options"
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(ModelOptions.model_fields)
        return ModelConfigError(field, f"unknown option; allowed options: {allowed}")
    return ModelConfigError(field, f"{err['msg']} (got {err['input']!r})")


def validate_options(name: str, options: dict[str, Any]) -> ModelOptions:
    """The preset's defaults overridden by `options`, validated; builds nothing.

    Raises ModelConfigError naming the bad field ("name" for an unknown architecture).
    The pretrained_weights file is only opened by `build_model`.
    """
    if name not in ARCHITECTURES:
        allowed = ", ".join(ARCHITECTURES)
        raise ModelConfigError("name", f"unknown architecture {name!r}; allowed: {allowed}")
    try:
        opts = ModelOptions.model_validate(ARCHITECTURES[name].default_options | dict(options))
    except ValidationError as exc:
        raise _error_from(exc) from None
    for field, conflicts, why in _CONFLICTS:
        if conflicts(opts):
            raise ModelConfigError(field, why)
    return opts


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered architecture; see `ModelOptions` for the options."""
    opts = validate_options(name, options)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelConfigError("num_classes", f"must be a positive integer (got {num_classes!r})")
    # Read the checkpoint first: a missing or unsafe file fails before the costly build.
    path = opts.pretrained_weights
    state = read_state_dict(path) if path is not None else None
    model = ResNet(
        BLOCKS[(opts.preact, opts.residual)],
        LAYERS,
        num_classes,
        deep_stem=opts.deep_stem,
        avg_down=opts.avg_down,
        act_layer=ACT_LAYERS[opts.act],
        attn_layer=ATTN_LAYERS[opts.attn],
        drop_path_rate=opts.drop_path_rate,
        dropout=opts.dropout,
        zero_init_residual=opts.zero_init_residual,
    )
    if state is not None and path is not None:
        logger.info("%s", apply_state_dict(model, state, path))
    return model


def canonical_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` validated and reduced to what differs from the preset's own values.

    The form jobs store: equal configurations give equal dicts however they were written
    (`se_resnet34` with or without `{"attn": "se"}` is `{}`).
    """
    resolved = validate_options(name, options).model_dump()  # raises for an unknown name
    preset = ARCHITECTURES[name].default_options
    return {key: value for key, value in resolved.items() if value != preset[key]}
