"""What each part of a recipe adds: foodlab runs of one preset with named overrides, on real photos.

    .venv/bin/python -m bench.recipe_parts --variant "lr=0.025" --variant "lr=0.025 ema_epochs=1"
        [--data DIR] [--preset recommended] [--epochs 15] [--seeds 0 1 2] [--out DIR]

Every variant is the preset (ResNet-34 from scratch, 64x64 unless `image_size=` says otherwise,
on the split of `bench/recipe.py`) with `field=value` overrides, as `foodlab train --set`
takes them; `baseline` is the preset as it is and is always run first. Each run records its
best validation accuracy, the test accuracy of its best checkpoint, its per-epoch curves
(validation and training accuracy and loss, the summed stage gradient norms) and its
wall-clock seconds. Results: bench/results/recipe_parts.{json,md} (appended to by later runs of
the same preset, epochs and data, so probes add up; --fresh starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from bench.recipe import DEFAULT_DATA, RESULTS, train_in_temp_folder
from core.settings import get_settings
from core.specs import ArchitectureSpec, TrainSpec, resolve_hyperparameters
from workers.engine.runtime import available_cpus

BASELINE = "baseline"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--preset", default="recommended")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='space-separated field=value overrides, e.g. "lr=0.025 warmup_steps=50"',
    )
    parser.add_argument("--skip-baseline", action="store_true", help="baseline already measured")
    parser.add_argument("--threads", type=int, default=available_cpus())
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def overrides_of(variant: str) -> dict[str, str | None]:
    """'lr=0.025 warmup_steps=50' -> {'lr': '0.025', 'warmup_steps': '50'} (text: the preset's
    field types convert them, as on the command line); 'grad_clip=null' unsets a field
    ('none' stays text: scheduler=none is a value)."""
    if variant == BASELINE:
        return {}
    pairs = [item.split("=", 1) for item in variant.split()]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--variant {variant!r}: expected field=value pairs")
    return {field: None if value == "null" else value for field, value in pairs}


def run_variant(args: argparse.Namespace, variant: str, seed: int, cache: Path) -> dict[str, Any]:
    overrides = {"image_size": "64", "epochs": str(args.epochs), "seed": str(seed)}
    hp = resolve_hyperparameters(args.preset, overrides | overrides_of(variant), from_text=True)
    spec = TrainSpec(architecture=ArchitectureSpec(name=args.arch), hyperparameters=hp)
    result, seconds = train_in_temp_folder(spec, args.data, cache)
    epochs = result.epochs
    return {
        "variant": variant,
        "seed": seed,
        "arch": args.arch,
        "seconds": seconds,
        "best_val_accuracy": max(m.val_accuracy for m in epochs),
        "test_accuracy": result.test.accuracy if result.test is not None else None,
        "val_accuracy": [m.val_accuracy for m in epochs],
        "train_accuracy": [m.train_accuracy for m in epochs],
        "train_loss": [m.train_loss for m in epochs],
        "val_loss": [m.val_loss for m in epochs],
        "grad_norm_sum": [sum(m.grad_norms.values()) for m in epochs],
        "train_images_per_second": [m.train_images_per_second for m in epochs],
        "hyperparameters": hp.model_dump(mode="json"),
    }


def load_previous(path: Path, key: dict[str, Any]) -> list[dict[str, Any]]:
    """Earlier runs of the same preset, epochs, architecture and data (else none)."""
    if not path.is_file():
        return []
    payload = json.loads(path.read_text())
    return payload["runs"] if payload.get("key") == key else []


def markdown(key: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    lines = [
        "# Recipe parts (bench/recipe_parts.py)",
        "",
        f"`{key['preset']}` with overrides, {key['arch']} from scratch at 64x64, "
        f"{key['epochs']} epochs, on {key['data']} (the split of bench/recipe.py). Best "
        "validation accuracy of each seed; the difference to `baseline` is over the seeds both "
        "ran.",
        "",
        "| variant | seeds | best val accuracy (mean) | per seed | vs baseline | test | s/run |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], {})[run["seed"]] = run
    base = by_variant.get(BASELINE, {})
    for variant, seeds in by_variant.items():
        best = [seeds[s]["best_val_accuracy"] for s in sorted(seeds)]
        shared = [s for s in seeds if s in base]
        delta = "-"
        if shared and variant != BASELINE:
            gain = statistics.fmean(
                seeds[s]["best_val_accuracy"] - base[s]["best_val_accuracy"] for s in shared
            )
            delta = f"{100 * gain:+.1f}"
        tests = [r["test_accuracy"] for r in seeds.values() if r["test_accuracy"] is not None]
        test = f"{100 * statistics.fmean(tests):.1f}%" if tests else "-"
        lines.append(
            f"| `{variant}` | {', '.join(map(str, sorted(seeds)))} | "
            f"{100 * statistics.fmean(best):.1f}% | "
            f"{' / '.join(f'{100 * b:.1f}' for b in best)} | {delta} | {test} | "
            f"{statistics.fmean(r['seconds'] for r in seeds.values()):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    key = {"preset": args.preset, "epochs": args.epochs, "arch": args.arch, "data": str(args.data)}
    json_path = args.out / "recipe_parts.json"
    runs = [] if args.fresh else load_previous(json_path, key)
    variants = ([] if args.skip_baseline else [BASELINE]) + args.variant
    for variant in variants:
        overrides_of(variant)  # a malformed variant fails before hours of training
    cache = get_settings().home / "cache"
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for variant in variants:
            context = {
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "load_before": [round(x, 1) for x in os.getloadavg()],
            }
            run = run_variant(args, variant, seed, cache) | context
            print(f"{variant} seed {seed}: best {run['best_val_accuracy']:.3f}", flush=True)
            runs = [r for r in runs if (r["variant"], r["seed"]) != (variant, seed)] + [run]
            json_path.write_text(json.dumps({"key": key, "runs": runs}, indent=2) + "\n")
            (args.out / "recipe_parts.md").write_text(markdown(key, runs))
    print((args.out / "recipe_parts.md").read_text())


if __name__ == "__main__":
    main()
