"""One ResNet class, four interchangeable 34-layer blocks.

Parameter names follow torchvision (conv1, bn1, layer1..layer4, downsample.0/1, fc) so that
torchvision checkpoints load with strict=True; the deep stem, avg-pool shortcut and attention
follow timm's names (conv1.0..6, downsample.0/1/2, `se`) so timm checkpoints of the same
designs load too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from .layers import DropPath, create_attn

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (conv-BN-act order), optional attention, added to the shortcut.

    Every block shares this constructor, so `ResNet` builds any variant from a block class.
    The class attributes say how the block is wired: `residual` (add the shortcut or not) and
    `preact` (BN-act before each conv, He et al. 2016 "Identity Mappings").
    """

    expansion = 1
    residual = True
    preact = False

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
        attn_layer: type[nn.Module] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        # Pre-activation normalises the block input (before conv1), post-activation its output.
        self.bn1 = norm_layer(inplanes if self.preact else planes)
        self.act1 = act_layer()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.act2 = act_layer()
        # Named `se` as in timm, whatever the attention, so timm checkpoints keep their keys.
        self.se = create_attn(attn_layer, planes)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = downsample

    def zero_init_last(self) -> None:
        """Zero the last BN gamma so the residual branch starts as zero (Goyal et al. 2017).

        In a pre-activation block bn2 is followed by act and conv2; act(0) = 0 for every
        allowed activation and beta is 0 at init, so the branch still starts as zero.
        """
        nn.init.zeros_(cast(nn.BatchNorm2d, self.bn2).weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        if self.residual:
            out = out + (self.downsample(x) if self.downsample is not None else x)
        return self.act2(out)


class PlainBlock(BasicBlock):
    """BasicBlock without the shortcut: the "plain" network of He et al. 2015."""

    residual = False


class PreActBlock(BasicBlock):
    """BN-act-conv, BN-act-conv; the sum is not activated (the next block's bn1 does that)."""

    preact = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        # The projection sees the pre-activated input, as in timm's ResNetV2.
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        return out + shortcut if self.residual else out


class PlainPreActBlock(PreActBlock):
    residual = False


# (preact, residual) -> block class: the two structural options pick the block.
BLOCKS: dict[tuple[bool, bool], type[BasicBlock]] = {
    (False, True): BasicBlock,
    (False, False): PlainBlock,
    (True, True): PreActBlock,
    (True, False): PlainPreActBlock,
}


def make_stem(
    out_channels: int, *, deep: bool, norm_layer: NormLayer, act_layer: ActLayer
) -> nn.Module:
    """7x7/2 conv, or ResNet-D's three 3x3 convs (32, 32, out; first stride 2) as timm resnet34d."""
    if not deep:
        return nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False)
    width = out_channels // 2
    return nn.Sequential(
        conv3x3(3, width, stride=2),
        norm_layer(width),
        act_layer(),
        conv3x3(width, width),
        norm_layer(width),
        act_layer(),
        conv3x3(width, out_channels),
    )


def make_downsample(
    inplanes: int, planes: int, stride: int, *, avg_down: bool, norm_layer: NormLayer | None
) -> nn.Sequential:
    """Projection shortcut: 1x1 conv (+BN), or ResNet-D's 2x2 avg-pool then stride-1 1x1 conv.

    The strided 1x1 conv of the original design reads only 1 in 4 input pixels; averaging
    first lets the shortcut see all of them (He et al. 2019, "Bag of Tricks").
    `norm_layer=None` (pre-activation) leaves the BN out: the next block normalises the sum.
    """
    layers: list[nn.Module] = []
    if avg_down and stride > 1:
        layers.append(nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False))
        stride = 1
    layers.append(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False))
    if norm_layer is not None:
        layers.append(norm_layer(planes))
    return nn.Sequential(*layers)


def make_stages(
    block: type[BasicBlock],
    layers: Sequence[int],
    channels: Sequence[int],
    inplanes: int,
    *,
    avg_down: bool,
    drop_path_rate: float,
    norm_layer: NormLayer,
    **block_kwargs,
) -> list[nn.Sequential]:
    """Build every stage; stride 2 opens stages 2+, drop-path rate rises linearly per block."""
    total = sum(layers)
    block_idx = 0
    stages = []
    for stage_idx, (depth, planes) in enumerate(zip(layers, channels, strict=True)):
        stride = 1 if stage_idx == 0 else 2
        outplanes = planes * block.expansion
        downsample = None
        # Plain blocks never add a shortcut, so they get no projection either.
        if block.residual and (stride != 1 or inplanes != outplanes):
            downsample = make_downsample(
                inplanes,
                outplanes,
                stride,
                avg_down=avg_down,
                norm_layer=None if block.preact else norm_layer,
            )
        blocks = []
        for i in range(depth):
            blocks.append(
                block(
                    inplanes,
                    planes,
                    stride if i == 0 else 1,
                    downsample if i == 0 else None,
                    norm_layer=norm_layer,
                    drop_path=drop_path_rate * block_idx / max(total - 1, 1),
                    **block_kwargs,
                )
            )
            inplanes = outplanes
            block_idx += 1
        stages.append(nn.Sequential(*blocks))
    return stages


class ResNet(nn.Module):
    """Stem -> 3x3/2 max-pool -> four stages -> [final BN-act if pre-activation] -> pool -> fc."""

    def __init__(
        self,
        block: type[BasicBlock],
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        *,
        channels: Sequence[int] = (64, 128, 256, 512),
        deep_stem: bool = False,
        avg_down: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = nn.ReLU,
        attn_layer: type[nn.Module] | None = None,
        drop_path_rate: float = 0.0,
        dropout: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        stem_out = channels[0]
        self.conv1 = make_stem(stem_out, deep=deep_stem, norm_layer=norm_layer, act_layer=act_layer)
        # Pre-activation nets leave the stem output raw: the first block's bn1 normalises it.
        self.bn1 = nn.Identity() if block.preact else norm_layer(stem_out)
        self.act = nn.Identity() if block.preact else act_layer()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = make_stages(
            block,
            layers,
            channels,
            stem_out,
            avg_down=avg_down,
            drop_path_rate=drop_path_rate,
            norm_layer=norm_layer,
            act_layer=act_layer,
            attn_layer=attn_layer,
        )
        self.num_features = channels[-1] * block.expansion
        # Pre-activation blocks output an un-normalised sum; normalise it once before pooling.
        self.final_norm = norm_layer(self.num_features) if block.preact else nn.Identity()
        self.final_act = act_layer() if block.preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.init_weights(zero_init_residual)

    def init_weights(self, zero_init_residual: bool = False) -> None:
        """torchvision's init: kaiming fan_out convs, BN 1/0, default Linear."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_act(self.final_norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
