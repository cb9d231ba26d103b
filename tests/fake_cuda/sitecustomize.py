"""A pretend NVIDIA machine for worker processes on a host without one (tests only).

Put this folder first on a process's PYTHONPATH and describe the GPUs in `FOODLAB_FAKE_GPUS`
(JSON: a list of {"name", "capability": [major, minor], "memory_gib", "uuid"}). Python imports
this module at start-up, before the worker's code, and it answers torch.cuda's device questions
about those GPUs, honouring CUDA_VISIBLE_DEVICES as the CUDA runtime does (read once, when CUDA
is first asked, so a worker that narrows it too late sees the wrong GPUs). The training engine
then computes on the CPU but describes the GPU it chose. `FOODLAB_FAKE_DRIVER_CUDA` is the CUDA
version the pretend driver supports (default 13.0; "none": no driver). Unset, nothing happens.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any

_SPEC = os.environ.get("FOODLAB_FAKE_GPUS")


def _install(gpus: list[dict[str, Any]]) -> None:
    import torch

    import workers.device as device_module
    from workers.engine import run, runtime

    driver = os.environ.get("FOODLAB_FAKE_DRIVER_CUDA", "13.0")
    driver = None if driver == "none" else driver
    seen: list[dict[str, Any]] = []
    started: list[bool] = []

    def visible() -> list[dict[str, Any]]:
        if not started:  # CUDA reads the variable once, at its initialisation
            started.append(True)
            entries = os.environ.get("CUDA_VISIBLE_DEVICES")
            names = [e.strip() for e in entries.split(",")] if entries is not None else None
            for entry in names if names is not None else [str(i) for i in range(len(gpus))]:
                match = [g for i, g in enumerate(gpus) if entry in (str(i), g.get("uuid"))]
                if not match:
                    break  # as CUDA: the list ends at the first entry it cannot use
                seen.append(match[0])
        return seen if driver_works() else []

    def driver_works() -> bool:  # a driver older than the build's CUDA: torch sees no GPU
        version = tuple(int(part) for part in str(torch.version.cuda).split("."))
        return driver is not None and tuple(int(part) for part in driver.split(".")) >= version

    def index(device: object = None) -> int:
        if device is None:
            return 0
        if isinstance(device, int):
            return device
        if isinstance(device, str):
            device = torch.device(device)
        return getattr(device, "index", None) or 0

    def gpu(device: object = None) -> dict[str, Any]:
        found = visible()
        number = index(device)
        if number >= len(found):
            raise RuntimeError("CUDA error: invalid device ordinal")
        return found[number]

    def properties(device: object = None) -> SimpleNamespace:
        chosen = gpu(device)
        major, minor = chosen["capability"]
        return SimpleNamespace(
            name=chosen["name"],
            major=major,
            minor=minor,
            total_memory=int(chosen.get("memory_gib", 16) * 2**30),
            uuid=chosen.get("uuid", "GPU-fake").removeprefix("GPU-"),
        )

    torch.cuda.is_available = lambda: bool(visible())
    torch.cuda.device_count = lambda: len(visible())
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_name = lambda device=None: gpu(device)["name"]
    torch.cuda.get_device_capability = lambda device=None: tuple(gpu(device)["capability"])
    torch.cuda.get_device_properties = properties
    device_module.driver_cuda_version = lambda: driver
    device_module.host_gpu_count = lambda: len(gpus) if driver is not None else None
    device_module.first_kernel = lambda: None

    @dataclass(frozen=True)
    class OnTheCpu(runtime.Runtime):
        """Computes on the CPU, described as the GPU it stands in for."""

        described: str = ""

        def describe(self) -> str:
            return self.described

    real_select = runtime.select_runtime

    def select_runtime(requested: Any, precision: Any = "auto") -> runtime.Runtime:
        chosen = real_select(requested, precision)
        if chosen.device.type != "cuda":
            return chosen
        cpu = real_select("cpu", "float32")
        values = {field.name: getattr(cpu, field.name) for field in fields(cpu)}
        return OnTheCpu(**values, described=chosen.describe())

    run.select_runtime = select_runtime  # type: ignore[assignment]


if _SPEC is not None:
    _install(json.loads(_SPEC))
