"""Accuracy parity of bfloat16 and float32 training on real photos, over seeds.

    .venv/bin/python -m bench.precision_parity [--data DIR] [--seeds 0 1 2] [--epochs N]

Trains the same preset (default `recommended`, ResNet-34 from scratch at 64x64) once per seed
in float32 and once in bfloat16 autocast (channels_last, as `precision: auto` trains on a CPU
with native bf16), same split, and compares the best validation accuracies: parity holds when
the mean difference is within the seed spread (the larger of the two standard deviations).
Results: bench/results/precision_parity.{json,md}, rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.recipe import train_in_temp_folder
from core.specs import ArchitectureSpec, TrainSpec, resolve_hyperparameters
from models.inference import cpu_has_native_bf16
from workers.engine.runtime import available_cpus, cpu_name

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "indonesian-snacks"
RESULTS = REPO / "bench" / "results"
PRECISIONS = ("float32", "bfloat16")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder of photos")
    parser.add_argument("--preset", default="recommended")
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=available_cpus())
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def run_one(args: argparse.Namespace, precision: str, seed: int, cache: Path) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "image_size": args.image_size,
        "seed": seed,
        "precision": precision,
    }
    if args.epochs:
        overrides["epochs"] = args.epochs
    hp = resolve_hyperparameters(args.preset, overrides)
    spec = TrainSpec(architecture=ArchitectureSpec(name=args.arch), hyperparameters=hp)
    result, seconds = train_in_temp_folder(spec, args.data, cache)
    accuracies = [m.val_accuracy for m in result.epochs]
    print(f"{precision} seed {seed}: best {max(accuracies):.3f}", flush=True)
    return {
        "precision": precision,
        "seed": seed,
        "epochs": hp.epochs,
        "seconds": seconds,
        "val_accuracy": accuracies,
        "best_val_accuracy": max(accuracies),
        "test_accuracy": result.test.accuracy if result.test is not None else None,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_precision = {}
    for precision in PRECISIONS:
        best = [r["best_val_accuracy"] for r in runs if r["precision"] == precision]
        if best:
            spread = statistics.stdev(best) if len(best) > 1 else 0.0
            by_precision[precision] = {
                "mean": statistics.fmean(best),
                "std": spread,
                "n": len(best),
            }
    if len(by_precision) < 2:
        return {"by_precision": by_precision}
    difference = by_precision["bfloat16"]["mean"] - by_precision["float32"]["mean"]
    spread = max(item["std"] for item in by_precision.values())
    return {
        "by_precision": by_precision,
        "bf16_minus_fp32": difference,
        "seed_spread": spread,
        "parity": abs(difference) <= spread,
    }


def markdown(stats: dict[str, Any], runs: list[dict[str, Any]], context: dict[str, Any]) -> str:
    lines = [
        "# bfloat16 against float32 training (bench/precision_parity.py)",
        "",
        f"`{context['preset']}` {context['arch']} at {context['image_size']}x"
        f"{context['image_size']} on {context['data']}, seeds {context['seeds']}, "
        f"{context['threads']} threads on {context['cpus']} CPUs ({context['cpu']}, native bf16: "
        f"{context['native_bf16']}); load average at the start {context['load_before']}.",
        "",
        "| precision | seed | epochs | best val accuracy | test accuracy | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        test = "-" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}%"
        lines.append(
            f"| {r['precision']} | {r['seed']} | {r['epochs']} | "
            f"{100 * r['best_val_accuracy']:.1f}% | {test} | {r['seconds']:.0f} |"
        )
    if "parity" in stats:
        lines += [
            "",
            f"Mean best validation accuracy: float32 "
            f"{100 * stats['by_precision']['float32']['mean']:.1f}%, bfloat16 "
            f"{100 * stats['by_precision']['bfloat16']['mean']:.1f}%: difference "
            f"{100 * stats['bf16_minus_fp32']:+.1f} points against a seed spread (std) of "
            f"{100 * stats['seed_spread']:.1f}: parity "
            f"{'holds' if stats['parity'] else 'does NOT hold'}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if not cpu_has_native_bf16():
        raise SystemExit("this CPU has no native bfloat16 (AVX512-BF16 or AMX): nothing to compare")
    context = {
        "data": str(args.data),
        "preset": args.preset,
        "arch": args.arch,
        "image_size": args.image_size,
        "seeds": args.seeds,
        "threads": args.threads,
        "cpus": available_cpus(),
        "cpu": cpu_name(),
        "native_bf16": cpu_has_native_bf16(),
        "load_before": [round(x, 1) for x in os.getloadavg()],
        "torch": torch.__version__,
    }
    cache = Path(tempfile.mkdtemp(prefix="foodlab-parity-cache-"))
    runs: list[dict[str, Any]] = []
    try:
        for seed in args.seeds:
            for precision in PRECISIONS:
                runs.append(run_one(args, precision, seed, cache))
                stats = summarise(runs)
                args.out.mkdir(parents=True, exist_ok=True)
                payload = {"context": context, "summary": stats, "runs": runs}
                (args.out / "precision_parity.json").write_text(json.dumps(payload, indent=2))
                (args.out / "precision_parity.md").write_text(markdown(stats, runs, context))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print((args.out / "precision_parity.md").read_text())


if __name__ == "__main__":
    main()
