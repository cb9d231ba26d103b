import typing

import pytest
import torch
from models_testlib import ALL_NAMES, EXPECTED_PARAMS, NUM_CLASSES, fresh, skeleton
from torch import nn

from models import (
    ARCHITECTURES,
    STAGES,
    ModelConfigError,
    ModelOptions,
    build_model,
    count_parameters,
    stage_grad_norms,
    validate_options,
)
from models.layers import ACT_LAYERS, ATTN_LAYERS
from tests.support import per_architecture


def test_expected_params_cover_registry():
    assert set(EXPECTED_PARAMS) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", per_architecture(ALL_NAMES))
def test_forward_backward(name, images):
    model = fresh(name)
    assert count_parameters(model) == EXPECTED_PARAMS[name]
    assert set(stage_grad_norms(model).values()) == {0.0}  # no backward yet

    logits = model(images)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    norms = stage_grad_norms(model)
    assert list(norms) == list(STAGES)
    assert all(isinstance(v, float) and v > 0 for v in norms.values()), norms


@pytest.mark.parametrize("name", ALL_NAMES)
def test_registry_entry(name):
    info = ARCHITECTURES[name]
    assert info.name == name and info.description
    assert set(info.default_options) == set(ModelOptions.model_fields)
    if info.timm_equivalent:
        assert info.timm_equivalent in info.description


def test_option_literals_match_layer_tables():
    hints = typing.get_type_hints(ModelOptions)
    assert set(typing.get_args(hints["attn"])) == set(ATTN_LAYERS)
    assert set(typing.get_args(hints["act"])) == set(ACT_LAYERS)


@pytest.mark.slow
def test_presets_are_just_options():
    assert count_parameters(skeleton("resnet34", attn="se")) == EXPECTED_PARAMS["se_resnet34"]
    assert count_parameters(skeleton("resnet34", residual=False)) == EXPECTED_PARAMS["plain34"]


def test_options_combine(images):
    model = fresh("resnet34d", preact=True, attn="eca", act="mish", drop_path_rate=0.1)
    assert model(images).shape == (2, NUM_CLASSES)


def test_validate_options_merges_preset_defaults():
    opts = validate_options("se_resnet34", {"act": "silu"})
    assert (opts.attn, opts.act, opts.residual) == ("se", "silu", True)
    assert validate_options("se_resnet34", {"attn": "none"}).attn == "none"


def _error(name, **options) -> ModelConfigError:
    with pytest.raises(ModelConfigError) as info:
        validate_options(name, options)
    assert isinstance(info.value, ValueError)
    return info.value


def test_unknown_name():
    err = _error("resnet50")
    assert err.field == "name"
    assert "'resnet50'" in err.message
    assert all(name in err.message for name in ARCHITECTURES)


def test_unknown_option():
    err = _error("resnet34", attention="se")
    assert err.field == "attention"
    assert "allowed options" in err.message and "attn" in err.message


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("attn", "cbam", ["'none'", "'se'", "'eca'"]),
        ("act", "tanh", ["'relu'", "'silu'", "'gelu'", "'mish'"]),
        ("drop_path_rate", 1.5, ["less than 1"]),
        ("dropout", -0.1, ["greater than or equal to 0"]),
        ("residual", "yes", ["boolean"]),
    ],
)
def test_bad_option_value(field, value, allowed):
    err = _error("resnet34", **{field: value})
    assert err.field == field
    assert all(a in err.message for a in allowed), err.message
    assert str(err).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "options",
    [{"avg_down": True}, {"drop_path_rate": 0.1}, {"zero_init_residual": True}],
)
def test_options_meaningless_without_residual(options):
    err = _error("plain34", **options)
    assert err.field == next(iter(options))
    assert "residual=True" in err.message


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ModelConfigError) as info:
        build_model("resnet34", num_classes)
    assert info.value.field == "num_classes"
