"""The optimiser step of ResNet-34 with fused kernels against `foreach`, on this machine's CPU.

    .venv/bin/python bench/optimizer_kernels.py [--threads 2] [--steps 20] [--rounds 3]

The engine's optimiser as `recommended` builds it (SGD, Nesterov momentum 0.9, weight decay on
weights only: `workers.engine.optim.build_optimizer`), stepped over ResNet-34's 21.3M
parameters with fixed gradients, once with the fused kernels and once with `foreach`,
alternating in rounds. Prints milliseconds per step and the ratio; results go to
bench/results/optimizer_kernels.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from core.specs import resolve_hyperparameters
from models import build_model
from workers.engine.optim import build_optimizer
from workers.engine.runtime import available_cpus, cpu_name

RESULTS = Path(__file__).resolve().parent / "results"
KERNELS = {"fused": {"fused": True, "foreach": None}, "foreach": {"fused": None, "foreach": True}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=available_cpus())
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and kernel")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def step_seconds(optimizer: torch.optim.Optimizer, steps: int) -> float:
    for _ in range(3):  # warm-up: momentum buffers, allocator
        optimizer.step()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    hp = resolve_hyperparameters("recommended", {})
    model = build_model("resnet34", 5)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    times: dict[str, list[float]] = {name: [] for name in KERNELS}
    for _ in range(args.rounds):
        for name, flags in KERNELS.items():
            optimizer = build_optimizer(model, hp)
            for group in optimizer.param_groups:
                group.update(flags)
            times[name].append(step_seconds(optimizer, args.steps))
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    payload = {
        "threads": args.threads,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "ms_per_step": ms,
        "rounds_ms": {name: [1000 * v for v in values] for name, values in times.items()},
        "foreach_over_fused": ms["foreach"] / ms["fused"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "optimizer_kernels.json").write_text(json.dumps(payload, indent=2) + "\n")
    report = (
        "# Optimiser kernels (bench/optimizer_kernels.py)\n\n"
        f"ResNet-34 SGD step as `recommended` builds it, {args.threads} threads, median of "
        f"{args.rounds} rounds of {args.steps} steps.\n\n"
        "| kernels | ms per step |\n|---|---:|\n"
        + "".join(f"| {name} | {value:.1f} |\n" for name, value in ms.items())
        + f"\nforeach / fused: {payload['foreach_over_fused']:.2f}x\n"
    )
    (args.out / "optimizer_kernels.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
