"""Which device and queues a worker uses, and what it checks before it takes any job.

One GPU per worker process. `FOODLAB_WORKER_DEVICE=cuda:N` (`foodlab worker --gpu N`) narrows
`CUDA_VISIBLE_DEVICES` to that one GPU before CUDA starts in the process, rather than calling
`torch.cuda.set_device`: the current device is per thread, so a DataLoader or checkpoint thread,
Triton or any library that touches CUDA without it would open a context (and hundreds of MB) on
GPU 0; a process that sees one GPU cannot. Inside the process that GPU is device 0 and a job's
spec says `cuda`, which validates, and resumes, on any GPU worker. Indices are nvidia-smi's
(and Docker's `device_ids`): PCI bus order, not CUDA's default fastest-first order.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import torch

from core.settings import Settings

VISIBLE = "CUDA_VISIBLE_DEVICES"
SETTING = "FOODLAB_WORKER_DEVICE"


class DeviceUnusable(Exception):
    """The worker was told to use a device it cannot use: it refuses to start."""


@dataclass(frozen=True)
class WorkerDevice:
    setting: str  # as configured: auto, cpu, cuda or cuda:N
    kind: Literal["cpu", "cuda"]  # what a job that leaves its device to the worker trains on
    gpu: int | None  # the GPU among those the process was started with; None: no pinning


def worker_device(settings: Settings) -> WorkerDevice:
    setting = settings.worker_device  # validated by Settings: auto, cpu, cuda or cuda:N
    if setting == "auto":
        # Not pinned: asking whether CUDA is there starts it, too late to narrow it.
        return WorkerDevice(setting, "cuda" if torch.cuda.is_available() else "cpu", None)
    if setting == "cpu":
        return WorkerDevice(setting, "cpu", None)
    _, _, index = setting.partition(":")
    return WorkerDevice(setting, "cuda", int(index or 0))


def worker_queues(settings: Settings) -> list[str]:
    """A GPU worker also takes CPU-or-anything jobs; a CPU worker never takes CUDA-only ones."""
    if settings.worker_queue:
        return [q.strip() for q in settings.worker_queue.split(",") if q.strip()]
    return ["gpu", "cpu"] if worker_device(settings).kind == "cuda" else ["cpu"]


def visible_gpus() -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES (indices or UUIDs); None when unset (all)."""
    value = os.environ.get(VISIBLE)
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def pin_gpu(device: WorkerDevice) -> None:
    """Let this process see only its GPU. Must run before anything starts CUDA here."""
    if device.gpu is None:
        return
    if torch.cuda.is_initialized():
        raise RuntimeError("CUDA started before the worker chose its GPU")
    entries = visible_gpus()
    if entries is None:
        chosen = str(device.gpu)
    elif device.gpu < len(entries):
        chosen = entries[device.gpu]
    else:
        raise DeviceUnusable(
            f"{SETTING}={device.setting}: this worker was started with "
            f"{VISIBLE}={os.environ[VISIBLE]!r}, {len(entries)} GPU(s) (0-{len(entries) - 1})"
        )
    os.environ[VISIBLE] = chosen
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def physical_gpu(visible: int) -> str:
    """The host's name for this process's GPU number `visible` (its index, or the UUID that
    CUDA_VISIBLE_DEVICES gave), as nvidia-smi and the job's device description say it."""
    entries = visible_gpus()
    return entries[visible] if entries is not None and visible < len(entries) else str(visible)


def driver_version() -> str:
    """The NVIDIA driver's version where something can tell (NVML, nvidia-smi), else the CUDA
    version the driver supports, as torch sees it."""
    try:
        import pynvml  # type: ignore[import-not-found]  # optional: nvidia-ml-py

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - not installed, or no driver: try the next source
        pass
    if shutil.which("nvidia-smi"):
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            found = subprocess.run(query, capture_output=True, text=True, timeout=10)
            if found.returncode == 0 and found.stdout.strip():
                return found.stdout.split()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    supported = driver_cuda_version()
    return f"unknown (supports CUDA {supported})" if supported else "none found"


def driver_cuda_version() -> str | None:
    """The newest CUDA the installed driver supports ('12.4'), None without a driver. Asked of
    the driver library itself (torch has no call for it), which starts no CUDA context."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):  # no driver installed (or not Linux)
        return None
    value = version.value
    return f"{value // 1000}.{value % 1000 // 10}" if value > 0 else None


def host_gpu_count() -> int | None:
    """GPUs on the machine whatever CUDA_VISIBLE_DEVICES says (NVML), None if unknown."""
    try:
        count = int(torch.cuda._raw_device_count_nvml())
    except Exception:  # noqa: BLE001 - a private helper of torch's: best-effort
        return None
    return count if count >= 0 else None


def kernel_architectures() -> list[str]:
    """The GPU architectures this torch build has kernels for ('sm_90', 'compute_90')."""
    try:
        return str(torch._C._cuda_getArchFlags()).split()
    except Exception:  # noqa: BLE001 - a CPU build
        return []


def has_kernels_for(capability: tuple[int, int], architectures: list[str]) -> bool:
    """Cubins run on the same major version at an equal or higher minor; PTX is compiled for
    any newer GPU when it loads."""
    major, minor = capability
    for arch in architectures:
        kind, _, digits = arch.partition("_")
        if not digits[:-1].isdigit() or not digits[-1].isdigit():
            continue
        built = (int(digits[:-1]), int(digits[-1]))
        if kind == "sm" and built[0] == major and built[1] <= minor:
            return True
        if kind == "compute" and built <= capability:
            return True
    return False


@dataclass(frozen=True)
class GpuFacts:
    """The GPU a worker trains on, as recorded in each job's run_info."""

    index: str  # the host's index (or UUID), see physical_gpu
    name: str
    capability: tuple[int, int]
    memory_gib: float
    uuid: str | None

    def recorded(self) -> dict[str, Any]:
        index = int(self.index) if self.index.isdigit() else None
        return {"gpu_index": index, "gpu_name": self.name, "gpu_uuid": self.uuid}

    def describe(self) -> str:
        major, minor = self.capability
        return (
            f"GPU {self.index}: {self.name}, compute capability {major}.{minor}, "
            f"{self.memory_gib:.1f} GiB{f', {self.uuid}' if self.uuid else ''}"
        )


def gpu_facts(visible: int = 0) -> GpuFacts:
    properties = torch.cuda.get_device_properties(visible)
    uuid = getattr(properties, "uuid", None)
    return GpuFacts(
        index=physical_gpu(visible),
        name=torch.cuda.get_device_name(visible),
        capability=tuple(torch.cuda.get_device_capability(visible)),  # type: ignore[arg-type]
        memory_gib=properties.total_memory / 2**30,
        uuid=None if uuid is None else f"GPU-{uuid}".replace("GPU-GPU-", "GPU-"),
    )


def first_kernel() -> None:
    """Run one kernel on the GPU: a build without kernels for it, or a broken driver, fails
    here rather than in every job."""
    torch.ones(8, device="cuda").sum().item()


def start_device(device: WorkerDevice) -> tuple[list[str], GpuFacts | None]:
    """Pin the worker's GPU and check that it can train there: what to log, and the GPU.
    Raises DeviceUnusable, saying why and what to change, when it cannot."""
    pin_gpu(device)
    built_for = torch.version.cuda
    lines = [f"torch {torch.__version__}, CUDA {built_for or 'none (a CPU build)'}"]
    if device.kind == "cpu":
        lines.append(f"worker device: cpu ({device.setting}; {torch.get_num_threads()} threads)")
        return lines, None
    lines.append(f"NVIDIA driver {driver_version()}")
    where = f"{SETTING}={device.setting}"
    if built_for is None:
        raise DeviceUnusable(f"{where}: this torch is a CPU build; install a CUDA build")
    if not torch.cuda.is_available():
        raise DeviceUnusable(f"{where}: {why_no_gpu(device, built_for)}")
    facts = gpu_facts(0)
    lines.append(f"worker device: {device.setting}, {facts.describe()}")
    architectures = kernel_architectures()
    if not has_kernels_for(facts.capability, architectures):
        major, minor = facts.capability
        raise DeviceUnusable(
            f"{where}: GPU {facts.index} ({facts.name}) has compute capability {major}.{minor}; "
            f"this torch build (CUDA {built_for}) has kernels for {' '.join(architectures)} "
            "only: install a torch build for this GPU (README, 'GPU workers')"
        )
    try:
        first_kernel()
    except RuntimeError as exc:
        raise DeviceUnusable(f"{where}: GPU {facts.index} cannot run a kernel: {exc}") from exc
    return lines, facts


def why_no_gpu(device: WorkerDevice, built_for: str) -> str:
    supported = driver_cuda_version()
    if supported is None:
        return "no NVIDIA driver was found (is this a GPU machine or container?)"
    needed = tuple(int(part) for part in built_for.split(".")[:2])
    if tuple(int(part) for part in supported.split(".")[:2]) < needed:
        return (
            f"the NVIDIA driver supports CUDA {supported}, this torch build needs CUDA "
            f"{built_for}: upgrade the driver or install a build for an older CUDA (README, "
            "'GPU workers')"
        )
    count = host_gpu_count()
    if device.gpu is not None and count is not None and device.gpu >= count:
        return f"GPU {device.gpu} does not exist: this machine has {count} GPU(s)" + (
            f" (0-{count - 1})" if count else ""
        )
    return "torch sees no usable GPU (torch.cuda.is_available() is false)"


@cache
def _started() -> dict[str, Any]:
    return {}


def remember(device: WorkerDevice, facts: GpuFacts | None) -> None:
    """What this worker process checked at start, for each job it then runs."""
    _started().update(device=device, facts=facts)


def device_record(settings: Settings) -> dict[str, Any]:
    """What a job run on this worker records about the device beside the engine's
    description: the worker's setting, and the GPU's host index, name and UUID."""
    started = _started()
    device = started.get("device") or worker_device(settings)
    facts: GpuFacts | None = started.get("facts")
    if facts is None and device.kind == "cuda" and torch.cuda.is_available():
        facts = gpu_facts(0)
    return {"worker_device": device.setting, **(facts.recorded() if facts else {})}


# CUDA errors after which the process's CUDA context is unusable: every later call fails too,
# so the process must end (cudaErrorIllegalAddress, cudaErrorAssert, cudaErrorLaunchFailure,
# ...). Matched in the messages torch raises them with ("CUDA error: an illegal memory access
# was encountered") and by their names.
STICKY_CUDA_ERRORS = (
    "illegal memory access",
    "cudaErrorIllegalAddress",
    "device-side assert",
    "cudaErrorAssert",
    "unspecified launch failure",
    "cudaErrorLaunchFailure",
    "illegal instruction",
    "cudaErrorIllegalInstruction",
    "misaligned address",
    "cudaErrorMisalignedAddress",
    "invalid program counter",
    "cudaErrorInvalidPc",
    "hardware stack error",
    "cudaErrorHardwareStackError",
    "the launch timed out and was terminated",
    "cudaErrorLaunchTimeout",
    "uncorrectable ECC error",
    "cudaErrorECCUncorrectable",
    "GPU has fallen off the bus",
    "CUBLAS_STATUS_EXECUTION_FAILED",
)


def is_sticky_cuda_error(exc: BaseException | None) -> bool:
    """An unrecoverable CUDA error (torch raises RuntimeError, or its subclass
    torch.AcceleratorError), here or as the cause of what was raised (a DataLoader's pin-memory
    thread re-raises it wrapped)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, RuntimeError) and any(text in str(exc) for text in STICKY_CUDA_ERRORS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
