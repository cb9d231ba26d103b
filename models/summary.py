"""What an architecture costs (parameters, FLOPs) and how gradients reach each stage.

FLOPs convention: `count_flops` returns torch.utils.flop_counter's total, which counts one
multiply-add as 2 FLOPs (convolutions and the linear layer; BN, activations and pooling are
not counted). `gflops` = that total / 1e9. torchvision's model card lists ResNet-34 as
"GFLOPS 3.66": that number counts multiply-adds (MACs), so it is half of our 7.33.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ModelConfigError
from .registry import ARCHITECTURES, build_model, validate_options

STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "classifier")

# Top-level module name -> stage. The pre-activation final BN normalises stage 4's output.
_STAGE_OF = {
    "conv1": "stem",
    "bn1": "stem",
    "layer1": "stage1",
    "layer2": "stage2",
    "layer3": "stage3",
    "layer4": "stage4",
    "final_norm": "stage4",
    "fc": "classifier",
}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int) -> int:
    """FLOPs (multiply-add = 2) of one forward pass of a 1x3xSxS image, in eval mode."""
    param = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()  # eval: drop-path is identity and BN running stats stay untouched
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


@functools.lru_cache(maxsize=256)
def _summary(name: str, num_classes: int, image_size: int, **options: Any) -> dict[str, Any]:
    opts = validate_options(name, options)
    # Counts need shapes, not values: on the meta device nothing is initialised or computed
    # (milliseconds instead of a second), and no checkpoint is read.
    with torch.device("meta"):
        model = build_model(name, num_classes, **(options | {"pretrained_weights": None}))
    info = ARCHITECTURES[name]
    return {
        "name": name,
        "description": info.description,
        "parameters": count_parameters(model),
        "gflops": count_flops(model, image_size) / 1e9,
        "default_options": opts.model_dump(),
        "timm_equivalent": info.timm_equivalent,
    }


def architecture_summary(
    name: str, num_classes: int = 5, image_size: int = 224, **options: Any
) -> dict[str, Any]:
    """Name, description, parameters, gflops (see module doc), resolved options, timm name.

    Cached per arguments (the API lists these repeatedly).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ModelConfigError("image_size", f"must be a positive integer (got {image_size!r})")
    # A copy, so a caller editing the result cannot change what the cache returns next time.
    return copy.deepcopy(_summary(name, num_classes, image_size, **options))


def measure_latency_ms(
    model: nn.Module, image_size: int, repeats: int = 30, warmup: int = 5
) -> float:
    """Median wall time (ms) of one forward pass of a single image on the model's device.

    `warmup` untimed calls first (they allocate memory and choose kernels), then `repeats`
    timed ones: the median of many ignores the runs that another process on a busy machine
    interrupted, which a mean or a handful of runs would not.
    """
    parameter = next(model.parameters())
    image = torch.randn(1, 3, image_size, image_size, device=parameter.device)
    was_training = model.training
    model.eval()
    times = []
    with torch.inference_mode():
        for index in range(repeats + warmup):
            started = time.perf_counter()
            model(image)
            if parameter.device.type == "cuda":
                torch.cuda.synchronize()
            if index >= warmup:
                times.append(time.perf_counter() - started)
    model.train(was_training)
    return round(1000 * statistics.median(times), 3)


def stage_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Every parameter under its stage; raises ValueError for one that belongs to none."""
    groups: dict[str, list[nn.Parameter]] = {stage: [] for stage in STAGES}
    for name, param in model.named_parameters():
        stage = _STAGE_OF.get(name.split(".", 1)[0])
        if stage is None:
            raise ValueError(f"parameter {name!r} belongs to no stage of {STAGES}")
        groups[stage].append(param)
    return groups


def stage_grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradients of each stage's parameters (0.0 where there are none).

    Call after backward. Raises ValueError for a parameter outside the known stages.
    """
    device = next(model.parameters()).device
    squares = [
        sum(
            (p.grad.detach().float().pow(2).sum() for p in params if p.grad is not None),
            torch.zeros((), device=device),
        )
        for params in stage_parameters(model).values()
    ]
    # One transfer for all stages: .tolist() syncs with the GPU.
    return dict(zip(STAGES, torch.stack(squares).sqrt().tolist(), strict=True))
