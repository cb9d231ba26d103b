"""What a modification of ResNet-34 changes, why one would try it, its paper and its code.

A model's changes are the registry options whose values differ from ResNet-34's (the
registry's `default_options` of the architecture, overridden by the job's options); each
option value maps to one `Change` below. The texts are catalogue messages; the code is cut
from `models/` by `analysis.source_excerpts`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from analysis.i18n import N_

RESIDUAL_BASELINE = "resnet34"


@dataclass(frozen=True)
class Paper:
    authors: str
    year: int
    title: str
    venue: str

    def citation(self) -> str:
        return f"{self.authors} ({self.year}). *{self.title}*. {self.venue}."

    def cite(self) -> str:
        """In the text: 'He et al., 2015'."""
        surnames = re.findall(r"([^\W\d_][\w-]*), (?:[A-Z]\.\s?)+", self.authors)
        if len(surnames) > 2 or "et al." in self.authors:
            return f"{surnames[0]} et al., {self.year}"
        return f"{' & '.join(surnames)}, {self.year}"


PAPERS = {
    "he2015": Paper(
        "He, K., Zhang, X., Ren, S., & Sun, J.",
        2015,
        "Deep Residual Learning for Image Recognition",
        "arXiv:1512.03385; CVPR 2016",
    ),
    "he2016": Paper(
        "He, K., Zhang, X., Ren, S., & Sun, J.",
        2016,
        "Identity Mappings in Deep Residual Networks",
        "ECCV 2016 (arXiv:1603.05027)",
    ),
    "hu2018": Paper(
        "Hu, J., Shen, L., & Sun, G.",
        2018,
        "Squeeze-and-Excitation Networks",
        "CVPR 2018 (arXiv:1709.01507)",
    ),
    "wang2020": Paper(
        "Wang, Q., Wu, B., Zhu, P., Li, P., Zuo, W., & Hu, Q.",
        2020,
        "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
        "CVPR 2020 (arXiv:1910.03151)",
    ),
    "he2019": Paper(
        "He, T., Zhang, Z., Zhang, H., Zhang, Z., Xie, J., & Li, M.",
        2019,
        "Bag of Tricks for Image Classification with Convolutional Neural Networks",
        "CVPR 2019 (arXiv:1812.01187)",
    ),
    "huang2016": Paper(
        "Huang, G., Sun, Y., Liu, Z., Sedra, D., & Weinberger, K. Q.",
        2016,
        "Deep Networks with Stochastic Depth",
        "ECCV 2016 (arXiv:1603.09382)",
    ),
    "goyal2017": Paper(
        "Goyal, P., Dollár, P., Girshick, R., et al.",
        2017,
        "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
        "arXiv:1706.02677",
    ),
    "hendrycks2016": Paper(
        "Hendrycks, D., & Gimpel, K.",
        2016,
        "Gaussian Error Linear Units (GELUs)",
        "arXiv:1606.08415",
    ),
    "ramachandran2017": Paper(
        "Ramachandran, P., Zoph, B., & Le, Q. V.",
        2017,
        "Searching for Activation Functions",
        "arXiv:1710.05941",
    ),
    "misra2019": Paper(
        "Misra, D.",
        2019,
        "Mish: A Self Regularized Non-Monotonic Activation Function",
        "arXiv:1908.08681",
    ),
    "srivastava2014": Paper(
        "Srivastava, N., Hinton, G., Krizhevsky, A., Sutskever, I., & Salakhutdinov, R.",
        2014,
        "Dropout: A Simple Way to Prevent Neural Networks from Overfitting",
        "JMLR 15",
    ),
}


@dataclass(frozen=True)
class Change:
    option: str
    applies: Callable[[Any], bool]  # does this option value make the change?
    title: str
    description: str  # what changes in the network
    rationale: str  # why a student would try it on a small dataset
    papers: tuple[str, ...]
    code: tuple[str, ...]  # excerpts of models/ ("file:qualified name")


BLOCK_FORWARD = "models/resnet.py:BasicBlock.forward"

CHANGES: tuple[Change, ...] = (
    Change(
        "residual",
        lambda value: value is False,
        N_("no shortcut connections (plain network)"),
        N_(
            "Each block's output is only its two 3x3 convolutions; nothing is added to it, "
            "so there are no projection convolutions either."
        ),
        N_("It is the baseline that shows what the shortcuts are worth."),
        ("he2015",),
        ("models/resnet.py:PlainBlock", BLOCK_FORWARD),
    ),
    Change(
        "attn",
        lambda value: value == "se",
        N_("squeeze-and-excitation (SE) channel attention"),
        N_(
            "After the second convolution of each block, the channels are averaged over the "
            "image, passed through a 1x1 reduction (16x), ReLU, a 1x1 expansion and a sigmoid, "
            "and each channel is multiplied by its weight before the shortcut is added."
        ),
        N_(
            "It lets the network weigh its channels by the whole image for about 1% more "
            "parameters and almost no extra computation."
        ),
        ("hu2018",),
        ("models/layers.py:SEModule", BLOCK_FORWARD),
    ),
    Change(
        "attn",
        lambda value: value == "eca",
        N_("efficient channel attention (ECA)"),
        N_(
            "After the second convolution of each block, the channels are averaged over the "
            "image and a 1-D convolution across neighbouring channels (kernel 3 or 5, chosen "
            "from the channel count) with a sigmoid gives each channel its weight."
        ),
        N_(
            "It keeps the idea of SE attention without the reduction layers: a few dozen "
            "parameters in the whole network."
        ),
        ("wang2020",),
        ("models/layers.py:eca_kernel_size", "models/layers.py:EcaModule", BLOCK_FORWARD),
    ),
    Change(
        "preact",
        lambda value: value is True,
        N_("pre-activation blocks"),
        N_(
            "Batch normalisation and the activation come before each convolution (BN-ReLU-"
            "conv), and the sum of branch and shortcut is not activated, so the shortcut "
            "path is a pure identity from block to block."
        ),
        N_("A clean identity path makes a deep network easier to optimise."),
        ("he2016",),
        ("models/resnet.py:PreActBlock",),
    ),
    Change(
        "deep_stem",
        lambda value: value is True,
        N_("deep stem (three 3x3 convolutions)"),
        N_("The 7x7 stem convolution is replaced by three 3x3 convolutions (32, 32, 64)."),
        N_("Small kernels see the same area with more non-linearity and fewer parameters."),
        ("he2019",),
        ("models/resnet.py:make_stem",),
    ),
    Change(
        "avg_down",
        lambda value: value is True,
        N_("average-pooled projection shortcut"),
        N_(
            "Where the resolution halves, the shortcut averages 2x2 pixels before its 1x1 "
            "convolution instead of using a strided 1x1 convolution."
        ),
        N_("A strided 1x1 convolution ignores three pixels in four; averaging uses them all."),
        ("he2019",),
        ("models/resnet.py:make_downsample",),
    ),
    Change(
        "drop_path_rate",
        lambda value: bool(value),
        N_("stochastic depth"),
        N_(
            "During training each residual branch is dropped for a random part of the batch, "
            "with a probability that grows linearly with depth; at evaluation nothing is dropped."
        ),
        N_("It regularises a deep network, which matters when there are few images."),
        ("huang2016",),
        ("models/layers.py:DropPath",),
    ),
    Change(
        "act",
        lambda value: value != "relu",
        N_("another activation function"),
        N_("Every ReLU is replaced by the chosen activation."),
        N_("Smooth activations can make optimisation easier."),
        (),
        ("models/layers.py:ACT_LAYERS",),
    ),
    Change(
        "dropout",
        lambda value: bool(value),
        N_("dropout before the classifier"),
        N_("Dropout is applied to the pooled features before the final linear layer."),
        N_("It regularises the classifier, which matters when there are few images."),
        ("srivastava2014",),
        ("models/resnet.py:ResNet.forward_head",),
    ),
    Change(
        "zero_init_residual",
        lambda value: value is True,
        N_("zero-initialised residual branches"),
        N_("The last batch normalisation of each block starts with weight 0."),
        N_("Each block starts as an identity, which steadies the first epochs."),
        ("goyal2017",),
        ("models/resnet.py:BasicBlock.zero_init_last",),
    ),
)

ACTIVATION_PAPERS = {"gelu": "hendrycks2016", "silu": "ramachandran2017", "mish": "misra2019"}


def full_options(
    architecture: str, options: Mapping[str, Any], registry: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Every option of a job: the architecture's registry defaults, then the job's own."""
    defaults = (registry.get(architecture) or {}).get("default_options") or {}
    return {**defaults, **options}


def changes_of(
    architecture: str, options: Mapping[str, Any], registry: Mapping[str, Mapping[str, Any]]
) -> list[tuple[Change, Any]]:
    """The changes (and option values) that make this model differ from ResNet-34."""
    baseline = full_options(RESIDUAL_BASELINE, {}, registry)
    mine = full_options(architecture, options, registry)
    return [
        (change, mine[change.option])
        for change in CHANGES
        if change.option in mine
        and mine[change.option] != baseline.get(change.option)
        and change.applies(mine[change.option])
    ]


def papers_of(change: Change, value: Any) -> tuple[str, ...]:
    if change.option == "act" and value in ACTIVATION_PAPERS:
        return (*change.papers, ACTIVATION_PAPERS[value])
    return change.papers
