"""Small building blocks shared by the networks: attention, activations, stochastic depth.

Attention modules all take the channel count as their first argument, so a block can build
whichever one it was given with `create_attn(attn_layer, channels)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor` (at least `divisor`), as timm does for SE."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SEModule(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): global pool -> 1x1 reduce -> ReLU -> 1x1 -> sigmoid.

    The reduced width is rounded to a multiple of 8 like timm's SEModule (64 channels -> 8, not 4)
    so that our se_resnet34 has exactly timm seresnet34's parameters.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        reduced = make_divisible(channels / reduction)
        self.fc1 = nn.Conv2d(channels, reduced, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA-Net's adaptive kernel: the odd number nearest |log2(C) / gamma + beta / gamma|, >= 3."""
    t = int(abs(math.log2(channels) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EcaModule(nn.Module):
    """Efficient channel attention (Wang et al. 2020): a 1-D conv across pooled channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # (N, 1, C): channels are the 1-D axis
        return x * y.sigmoid().view(x.shape[0], -1, 1, 1)


# Option value -> attention class; None means "no attention module at all".
ATTN_LAYERS: dict[str, type[nn.Module] | None] = {"none": None, "se": SEModule, "eca": EcaModule}

# Option value -> activation class. GELU has no inplace variant.
ACT_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "relu": partial(nn.ReLU, inplace=True),
    "silu": partial(nn.SiLU, inplace=True),
    "gelu": nn.GELU,
    "mish": partial(nn.Mish, inplace=True),
}


def create_attn(attn_layer: type[nn.Module] | None, channels: int) -> nn.Module | None:
    """The attention module for `channels`, or None when the block has no attention."""
    return attn_layer(channels) if attn_layer is not None else None


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a whole residual branch per sample.

    Kept samples are scaled by 1/keep so the expected output matches eval, where this is identity.
    """

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"
