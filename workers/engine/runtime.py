"""Where and how the math runs: device, mixed precision, memory format, CPU threads."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass, replace

import torch

from core.specs import Device, Precision, SpecError
from models.inference import cpu_has_native_bf16
from workers.device import physical_gpu

# Each compute dtype's name (run_info, comparisons) and its short label in the job's device
# description (as jobs trained before precision was a setting were described).
PRECISION_NAMES = {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
SHORT_LABELS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
EXPLICIT_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: float32 throughout
    channels_last: bool
    sync_every: int  # batches between progress reports, each of which waits for the device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def fp16(self) -> bool:
        """Float16 needs loss scaling; bfloat16 has float32's range and does not."""
        return self.amp_dtype == torch.float16

    @property
    def precision(self) -> str:
        """'float32', 'bfloat16' or 'float16': what the convolutions compute in."""
        return PRECISION_NAMES[self.amp_dtype]

    def describe(self) -> str:
        """The job's device description (at most 50 characters: a database column)."""
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device).removeprefix("NVIDIA ")
            index = physical_gpu(self.device.index or 0)  # the host's, not this process's
            return f"cuda:{index} {name} ({SHORT_LABELS[self.precision]})"[:50]
        return f"cpu ({torch.get_num_threads()} threads, {SHORT_LABELS[self.precision]})"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name, for benchmark reports (`platform.processor()` is empty on Linux)."""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def compute_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: float32).

    'auto' is bfloat16 where the hardware computes it natively: on CUDA from compute capability
    8.0 (Ampere; `torch.cuda.is_bf16_supported()` is also true where it is only emulated, as on
    a T4), else float16 with loss scaling; on the CPU with AVX512-BF16 or AMX (the rule serving
    uses), else float32.
    """
    if precision != "auto":
        return EXPLICIT_DTYPES[precision]
    if device.type == "cuda":
        native = torch.cuda.get_device_capability(device) >= (8, 0)
        return torch.bfloat16 if native else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def select_runtime(requested: Device, precision: Precision = "auto") -> Runtime:
    """CUDA when present (or asked for), else the CPU; sets the global backend flags."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise SpecError("hyperparameters.device", "cuda was requested but no GPU is available")
    if requested != "cpu" and torch.cuda.is_available():
        # Fixed input size: let cuDNN pick the fastest kernels once.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        device = torch.device("cuda", torch.cuda.current_device())
        # Sync with the GPU rarely: each .item() stalls the queue of kernels.
        return Runtime(device, compute_dtype(precision, device), channels_last=True, sync_every=25)
    # torch may count all host cores in a container limited to fewer; more threads than
    # cores only adds contention. Never raise a limit a caller has set (tests use 1).
    torch.set_num_threads(max(1, min(torch.get_num_threads(), available_cpus())))
    device = torch.device("cpu")
    dtype = compute_dtype(precision, device)
    # Memory format per precision, as measured on x86 CPUs (bench/train_throughput.py): in
    # float32 ResNet-34 training steps were 13-20% slower in channels_last (64 px, batch 32:
    # 62 vs 55 images/s), in bfloat16 channels_last was 3-8% faster (oneDNN's bf16 kernels
    # are blocked for NHWC).
    return Runtime(device, dtype, channels_last=dtype == torch.bfloat16, sync_every=1)


# oneDNN's bfloat16 convolution backward on the CPU (torch 2.14.1, AVX512-BF16) returns weight
# gradients of garbage (up to 1e35, different on every run, in either memory format) for the
# stride-2 convolution that opens ResNet-34's layer4 when its input is 1x1: images of 16 px.
# Measured exact from 17 px up (17-32 px, 12 repeats each, both layouts).
MIN_CPU_BF16_IMAGE_SIZE = 17


def fit_image_size(runtime: Runtime, precision: Precision, image_size: int) -> Runtime:
    """`runtime`, or float32 where CPU bfloat16 computes wrong gradients at this image size
    (`auto` falls back; an explicit bfloat16 is refused, naming the field)."""
    wrong = (
        runtime.device.type == "cpu"
        and runtime.amp_dtype == torch.bfloat16
        and image_size < MIN_CPU_BF16_IMAGE_SIZE
    )
    if not wrong:
        return runtime
    if precision != "auto":
        raise SpecError(
            "hyperparameters.precision",
            f"bfloat16 training on the CPU needs images of at least {MIN_CPU_BF16_IMAGE_SIZE} px "
            f"(training crops are {image_size} px: oneDNN's bf16 gradients are wrong there); "
            "use precision float32 or auto",
        )
    return replace(runtime, amp_dtype=None, channels_last=False)
