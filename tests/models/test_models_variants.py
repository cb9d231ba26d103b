"""Each modification changes what it claims, and nothing else."""

import pytest
import torch
from models_testlib import fresh, shared, skeleton
from torch import nn

from models import count_parameters
from models.layers import DropPath, EcaModule, SEModule
from models.resnet import BasicBlock, PreActBlock


def blocks(model: nn.Module) -> list[BasicBlock]:
    return [m for m in model.modules() if isinstance(m, BasicBlock)]


@pytest.mark.parametrize(("name", "depends_on_input"), [("resnet34", True), ("plain34", False)])
def test_only_residual_nets_pass_the_input_through_zeroed_branches(name, depends_on_input):
    """With every block's last BN gamma zeroed, each block's own branch outputs zero: resnet34
    still carries the input along its shortcuts; plain34 has no additive path, so its output
    is the classifier bias whatever the input."""
    model = fresh(name).eval()
    for block in blocks(model):
        block.zero_init_last()
    with torch.no_grad():
        a, b = model(torch.randn(2, 3, 64, 64)), model(torch.randn(2, 3, 64, 64))
    assert torch.equal(a, b) != depends_on_input


def test_plain_has_no_projections():
    plain, resnet = skeleton("plain34"), skeleton("resnet34")
    assert all(b.downsample is None and not b.residual for b in blocks(plain))
    projections = [b.downsample for b in blocks(resnet) if b.downsample is not None]
    assert len(projections) == 3  # first block of stages 2-4
    projection_params = sum(count_parameters(p) for p in projections)
    assert projection_params == 173_824
    assert count_parameters(resnet) - count_parameters(plain) == projection_params


def test_se_blocks():
    model = skeleton("se_resnet34")
    assert all(isinstance(b.se, SEModule) for b in blocks(model))
    # reduction 16, rounded to multiples of 8 like timm: 64 -> 8, 128 -> 8, 256 -> 16, 512 -> 32
    widths = {b.se.fc1.in_channels: b.se.fc1.out_channels for b in blocks(model)}
    assert widths == {64: 8, 128: 8, 256: 16, 512: 32}
    assert all(b.se is None for b in blocks(skeleton("resnet34")))


def test_eca_blocks():
    model = skeleton("eca_resnet34")
    assert all(isinstance(b.se, EcaModule) for b in blocks(model))
    # ECA-Net: k = odd(|log2(C)/2 + 1/2|): 64 -> 3, 128/256/512 -> 5
    kernels = {b.conv2.out_channels: b.se.conv.kernel_size[0] for b in blocks(model)}
    assert kernels == {64: 3, 128: 5, 256: 5, 512: 5}


def _call_order(block: nn.Module, x: torch.Tensor) -> list[str]:
    order: list[str] = []
    for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2"):
        getattr(block, name).register_forward_hook(lambda *_, name=name: order.append(name))
    block(x)
    return order


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("resnet34", ["conv1", "bn1", "act1", "conv2", "bn2", "act2"]),
        ("preact_resnet34", ["bn1", "act1", "conv1", "bn2", "act2", "conv2"]),
    ],
)
def test_block_order(name, order):
    # A fresh block of the preset's block class, so the hooks stay off the shared model.
    block = type(skeleton(name).layer2[1])(128, 128)
    assert _call_order(block, torch.randn(2, 128, 8, 8)) == order


def test_preact_structure():
    model = skeleton("preact_resnet34")
    assert all(isinstance(b, PreActBlock) for b in blocks(model))
    assert isinstance(model.bn1, nn.Identity)  # the first block's bn1 normalises the stem
    assert isinstance(model.final_norm, nn.BatchNorm2d) and not isinstance(
        model.final_act, nn.Identity
    )
    projection = model.layer2[0].downsample
    assert [type(m) for m in projection] == [nn.Conv2d]  # next block's BN normalises the sum
    assert isinstance(skeleton("resnet34").final_norm, nn.Identity)


def test_avg_down_shortcut():
    d = skeleton("resnet34d").layer2[0].downsample
    assert [type(m) for m in d] == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]
    assert d[1].stride == (1, 1)
    plain = skeleton("resnet34").layer2[0].downsample
    assert [type(m) for m in plain] == [nn.Conv2d, nn.BatchNorm2d] and plain[0].stride == (2, 2)


def test_deep_stem():
    stem = skeleton("resnet34d").conv1
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (3, 3), (2, 2)),
        (32, (3, 3), (1, 1)),
        (64, (3, 3), (1, 1)),
    ]
    assert skeleton("resnet34").conv1.kernel_size == (7, 7)


def test_drop_path_rate_rises_linearly():
    model = skeleton("resnet34", drop_path_rate=0.3)
    rates = [
        b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks(model)
    ]
    assert rates == pytest.approx([0.3 * i / 15 for i in range(16)])


def test_drop_path_identity_in_eval_stochastic_in_train(images):
    model = fresh("resnet34", drop_path_rate=0.5).eval()
    drop_paths = [m for m in model.modules() if isinstance(m, DropPath)]
    with torch.no_grad():
        out = model(images)
        for m in drop_paths:
            m.drop_prob = 0.0
        assert torch.equal(model(images), out)  # eval output is the no-drop-path output
        for m in drop_paths:
            m.drop_prob = 0.5
        model.train()  # BN uses batch stats: deterministic, so any change is drop-path
        assert not torch.equal(model(images), model(images))


def test_drop_path_module():
    x = torch.ones(1000, 1, 1, 1)
    layer = DropPath(0.5).train()
    out = layer(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}  # kept samples scaled by 1/keep
    assert 0.4 < (out == 0).float().mean() < 0.6
    assert layer.eval()(x) is x


@pytest.mark.parametrize(("act", "cls"), [("silu", nn.SiLU), ("gelu", nn.GELU), ("mish", nn.Mish)])
def test_activation(act, cls):
    model = skeleton("resnet34", act=act)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, cls) for m in model.modules()) == 1 + 2 * 16


def test_dropout():
    assert skeleton("resnet34", dropout=0.25).dropout.p == 0.25


def test_zero_init_residual():
    assert all(
        torch.all(b.bn2.weight == 0) for b in blocks(shared("resnet34", zero_init_residual=True))
    )
    assert all(torch.all(b.bn2.weight == 1) for b in blocks(shared("resnet34")))
