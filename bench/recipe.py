"""foodlab's `recommended` recipe against a good plain torchvision script, on real photos.

    .venv/bin/python bench/recipe.py [--data DIR] [--seeds 0 1 2] [--threads 2]

Measures in one run, on the same split and at the same image size (64x64, ResNet-34 from
scratch):
  (s) script     torchvision ImageFolder + DataLoader, torchvision's resnet34; SGD with
                 Nesterov momentum 0.9, OneCycle to a peak lr of 0.1, weight decay 5e-4 on all
                 parameters, RandomResizedCrop(scale=(0.35, 1)) + horizontal flip + colour
                 jitter 0.2, label smoothing 0.1, batch 32/64, 15 epochs: its wall-clock time
                 is the budget;
  (t) same time  foodlab `recommended` ResNet-34 with as many epochs as fit in that budget
                 (sized by a two-epoch probe: an epoch is the time between the two epochs'
                 ends, checkpoint included; the image cache is built inside the budget);
  (e) 15 epochs  foodlab `recommended` ResNet-34 at the script's 15 epochs;
  (p) plain      foodlab `recommended` Plain-34 at 15 epochs (the degradation the study shows).
Targets: (t) >= (s) + 8 points best validation accuracy; (e) >= (s); (p) < (e).
Results: bench/results/recipe.{json,md}, rewritten after every run so a long bench that is
stopped keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

from core.datasets import load_or_create_split, scan_dataset
from core.specs import ArchitectureSpec, EpochMetrics, TrainSpec, resolve_hyperparameters
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, default_resize_size
from workers.engine import RunResult, TrainingCallback, train
from workers.engine.runtime import PRECISION_NAMES, available_cpus, compute_dtype, cpu_name

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "food101-dev5"
RESULTS = REPO / "bench" / "results"
SCRIPT_EPOCHS = 15
TARGET_POINTS = 0.08


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JPEG ImageFolder")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=available_cpus())
    parser.add_argument(
        "--workers",
        type=int,
        default=available_cpus(),
        help="DataLoader processes of the script (torchvision's -j)",
    )
    parser.add_argument("--preset", default="recommended")
    parser.add_argument(
        "--epochs",
        type=int,
        default=SCRIPT_EPOCHS,
        help="the script's epochs (15; fewer only to try the bench out)",
    )
    parser.add_argument(
        "--runs",
        nargs="*",
        choices=("script", "same_time", "epochs15", "plain15"),
        default=["script", "same_time", "epochs15", "plain15"],
        help="which runs (same_time needs the script's run, here or in --reuse: its wall-clock "
        "is the budget); none, with --reuse: report that file's runs again",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        help="an earlier results file: its runs are kept for every seed and kind not run now "
        "(so new --seeds extend it), and its script runs give the same-time budgets",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


# --- (s) the plain torchvision script ---------------------------------------------------------


class PhotoFolder(torchvision.datasets.ImageFolder):
    """ImageFolder without hidden folders (foodlab's own derived files live in one)."""

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes = sorted(
            e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
        )
        return classes, {name: i for i, name in enumerate(classes)}


def script_loaders(
    args: argparse.Namespace, split: Any, scan: Any
) -> tuple[DataLoader, DataLoader, DataLoader]:
    size = args.image_size
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.35, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.2, 0.2, 0.2),
            T.ToTensor(),
            normalize,
        ]
    )
    val_tf = T.Compose(
        [T.Resize(default_resize_size(size)), T.CenterCrop(size), T.ToTensor(), normalize]
    )
    train_set = PhotoFolder(str(args.data), transform=train_tf)
    val_set = PhotoFolder(str(args.data), transform=val_tf)
    # The same split as foodlab's: map its relative paths onto ImageFolder's indexes.
    index = {
        Path(path).relative_to(args.data).as_posix(): i
        for i, (path, _) in enumerate(train_set.samples)
    }
    train_idx = [index[scan.files[i]] for i in split.train]
    val_idx = [index[scan.files[i]] for i in split.val]
    test_idx = [index[scan.files[i]] for i in split.test]
    common = {"num_workers": args.workers, "persistent_workers": args.workers > 0}
    return (
        DataLoader(
            Subset(train_set, train_idx), batch_size=32, shuffle=True, drop_last=True, **common
        ),
        DataLoader(Subset(val_set, val_idx), batch_size=64, **common),
        DataLoader(Subset(val_set, test_idx), batch_size=64, num_workers=0),
    )


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            total += len(labels)
    return correct / max(total, 1)


def run_script(args: argparse.Namespace, seed: int, split: Any, scan: Any) -> dict[str, Any]:
    torch.manual_seed(seed)
    started = time.perf_counter()
    train_loader, val_loader, test_loader = script_loaders(args, split, scan)
    model = torchvision.models.resnet34(num_classes=len(scan.class_names))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, epochs=args.epochs, steps_per_epoch=len(train_loader)
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    accuracies: list[float] = []
    best_state = None
    for _ in range(args.epochs):
        model.train()
        for images, labels in train_loader:
            loss = criterion(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        accuracies.append(accuracy(model, val_loader))
        if accuracies[-1] == max(accuracies):  # kept in memory, as a script would save best.pt
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        print(f"script seed {seed} epoch {len(accuracies)}: {accuracies[-1]:.3f}", flush=True)
    seconds = time.perf_counter() - started  # the budget: training and validation only
    assert best_state is not None
    model.load_state_dict(best_state)
    return {
        "seed": seed,
        "epochs": args.epochs,
        "seconds": seconds,
        "val_accuracy": accuracies,
        "best_val_accuracy": max(accuracies),
        "test_accuracy": accuracy(model, test_loader) if split.test else None,
    }


# --- foodlab ----------------------------------------------------------------------------------


def train_in_temp_folder(
    spec: TrainSpec, data: Path, cache: Path, callbacks: Iterable[TrainingCallback] = ()
) -> tuple[RunResult, float]:
    """One foodlab run into a folder removed afterwards: (its result, wall-clock seconds)."""
    out = Path(tempfile.mkdtemp(prefix="foodlab-bench-"))
    started = time.perf_counter()
    try:
        result = train(spec, data, out, cache_dir=cache, callbacks=callbacks)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return result, time.perf_counter() - started


def run_foodlab(
    args: argparse.Namespace,
    seed: int,
    arch: str,
    epochs: int,
    cache: Path,
) -> dict[str, Any]:
    hp = resolve_hyperparameters(
        args.preset, {"image_size": args.image_size, "epochs": epochs, "seed": seed}
    )
    spec = TrainSpec(architecture=ArchitectureSpec(name=arch), hyperparameters=hp)
    ends = EpochEnds()
    started = time.perf_counter()
    result, seconds = train_in_temp_folder(spec, args.data, cache, [ends])
    accuracies = [m.val_accuracy for m in result.epochs]
    print(f"foodlab {arch} seed {seed} {epochs} epochs: best {max(accuracies):.3f}", flush=True)
    return {
        "seed": seed,
        "arch": arch,
        "epochs": epochs,
        "seconds": seconds,
        "val_accuracy": accuracies,
        "best_val_accuracy": max(accuracies),
        "epoch_seconds": [m.epoch_seconds for m in result.epochs],
        # Seconds from the run's start to each epoch's end (its checkpoint written).
        "epoch_ends": [t - started for t in ends.times],
        # The best checkpoint on the held-out test images (the tuning issue's split).
        "test_accuracy": result.test.accuracy if result.test is not None else None,
        "hyperparameters": hp.model_dump(mode="json"),
    }


class EpochEnds(TrainingCallback):
    """When each epoch's rows arrive: after its validation and its checkpoint (written in line
    on the CPU), which an epoch's own `epoch_seconds` leaves out."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        self.times.append(time.perf_counter())


def epochs_in_budget(
    args: argparse.Namespace, seed: int, budget: float, cache: Path
) -> tuple[int, float]:
    """How many epochs of foodlab fit in `budget` seconds, from a two-epoch probe: an epoch costs
    the time between the two epochs' ends (checkpoint included), and the run's fixed cost
    (building the image cache, the model, the test score and the bundle) is the rest."""
    probe = run_foodlab(args, seed, "resnet34", 2, cache)  # builds the cache too
    epoch = probe["epoch_ends"][1] - probe["epoch_ends"][0]
    fixed = probe["seconds"] - 2 * epoch
    return max(1, math.floor((budget - fixed) / epoch)), fixed


def epoch_ends(run: dict[str, Any]) -> list[float]:
    """Seconds from the run's start to each epoch's end; for a run recorded without them, the
    latest each can have been: the run's seconds less the later epochs' own seconds."""
    if "epoch_ends" in run:
        return run["epoch_ends"]
    own = run["epoch_seconds"]
    return [run["seconds"] - sum(own[k + 1 :]) for k in range(len(own))]


def best_within(run: dict[str, Any], budget: float) -> float | None:
    """The best validation accuracy among the epochs that ended within `budget` seconds: what a
    run stopped at the script's time would have (a probe's estimate can overrun by an epoch)."""
    pairs = zip(run["val_accuracy"], epoch_ends(run), strict=True)
    reached = [accuracy for accuracy, end in pairs if end <= budget]
    return max(reached) if reached else None


# --- report -----------------------------------------------------------------------------------


def earlier_runs(path: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """The runs of an earlier results file, by kind and seed (files written before runs named
    their seed list them in the order of the context's seeds)."""
    payload = json.loads(path.read_text())
    seeds = payload["context"]["seeds"]
    return {
        kind: {run.get("seed", seed): run for seed, run in zip(seeds, items, strict=False)}
        for kind, items in payload["runs"].items()
    }


def seeds_to_report(seeds: list[int], earlier: dict[str, dict[int, dict[str, Any]]]) -> list[int]:
    """The seeds run now and those of an earlier file: new seeds extend the file, and a kind
    redone for some seeds is compared with the very same other runs."""
    return sorted(set(seeds).union(*(by_seed.keys() for by_seed in earlier.values())))


def runs_to_do(
    seed: int, args: argparse.Namespace, earlier: dict[str, dict[int, dict[str, Any]]]
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """For one seed: the kinds to run now, and the earlier runs kept for the other kinds."""
    fresh = [kind for kind in args.runs if seed in args.seeds]
    kept = {
        kind: by_seed[seed]
        for kind, by_seed in earlier.items()
        if seed in by_seed and kind not in fresh
    }
    return fresh, kept


def summary(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not runs:
        return None
    best = [r["best_val_accuracy"] for r in runs]
    tests = [r["test_accuracy"] for r in runs if r.get("test_accuracy") is not None]
    # Same-time runs: the best among the epochs that ended within the script's time (nothing
    # reached in time counts as 0); older results files lack it.
    within = [r["best_val_within_budget"] or 0.0 for r in runs if "best_val_within_budget" in r]
    return {
        "seeds": [r["seed"] for r in runs],
        "mean": statistics.fmean(best),
        "within_budget_mean": statistics.fmean(within) if len(within) == len(runs) else None,
        "std": statistics.stdev(best) if len(best) > 1 else 0.0,
        "test_mean": statistics.fmean(tests) if tests else None,
        "seconds": statistics.fmean(r["seconds"] for r in runs),
        "epochs": statistics.fmean(r["epochs"] for r in runs),
    }


def counted_accuracy(run: dict[str, Any]) -> float:
    """What a run scores in a check: a same-time run its best within the script's time
    (nothing in time: 0), any other (and a same-time run of an older file) its best."""
    if "best_val_within_budget" in run:
        return run["best_val_within_budget"] or 0.0
    return run["best_val_accuracy"]


def paired_gain(better: list[dict[str, Any]], worse: list[dict[str, Any]]) -> float | None:
    """The mean, over the seeds both kinds ran, of each seed's difference in counted accuracy:
    a seed's runs share its split of the noise, so a kind run on more seeds is not compared
    with the other's luckier or unluckier ones."""
    by_seed = {run["seed"]: run for run in worse}
    pairs = [(run, by_seed[run["seed"]]) for run in better if run["seed"] in by_seed]
    if not pairs:
        return None
    return statistics.fmean(counted_accuracy(a) - counted_accuracy(b) for a, b in pairs)


CHECKS = {  # name: (the kind that should score higher, the other, the target gain)
    "same_time_minus_script": ("same_time", "script", TARGET_POINTS),
    "epochs15_minus_script": ("epochs15", "script", 0.0),
    "resnet_minus_plain": ("epochs15", "plain15", 0.0),
}


def write_results(
    args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], context: dict[str, Any]
) -> None:
    stats = {name: summary(items) for name, items in runs.items()}
    gains = {name: paired_gain(runs[a], runs[b]) for name, (a, b, _) in CHECKS.items()}
    checks = {name: gain for name, gain in gains.items() if gain is not None}
    payload = {
        "context": context,
        "summary": stats,
        "checks": checks,
        "runs": runs,
        "targets": {name: target for name, (_, _, target) in CHECKS.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recipe.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "recipe.md").write_text(markdown(stats, checks, context))


LABELS = {
    "script": "(s) torchvision script, 15 epochs",
    "same_time": "(t) foodlab `{preset}`, same wall-clock",
    "epochs15": "(e) foodlab `{preset}`, 15 epochs",
    "plain15": "(p) foodlab `{preset}` Plain-34, 15 epochs",
}


def markdown(stats: dict[str, Any], checks: dict[str, float], context: dict[str, Any]) -> str:
    lines = [
        "# Recipe: foodlab against a plain torchvision script (bench/recipe.py)",
        "",
        f"ResNet-34 from scratch at {context['image_size']}x{context['image_size']} on "
        f"{context['data']} ({context['train_size']} training / {context['val_size']} "
        f"validation photos, same split; {context['test_size']} held out); seeds "
        f"{context['seeds']}; {context['threads']} threads on {context['cpus']} CPUs "
        f"({context['cpu']}); foodlab in {context['foodlab_precision']}, the "
        f"script in float32; load average at the start {context['load_before']}.",
        "",
        "| run | seeds | epochs | wall-clock s | best val accuracy (mean ± std) | test accuracy |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, label in LABELS.items():
        item = stats[name]
        if item:
            test = "-" if item["test_mean"] is None else f"{100 * item['test_mean']:.1f}%"
            lines.append(
                f"| {label.format(preset=context['preset'])} | "
                f"{', '.join(map(str, item['seeds']))} | {item['epochs']:.0f} | "
                f"{item['seconds']:.0f} | {100 * item['mean']:.1f}% ± "
                f"{100 * item['std']:.1f} | {test} |"
            )
    within = stats["same_time"]["within_budget_mean"] if stats["same_time"] else None
    if within is not None:
        lines += [
            "",
            f"(t) counted only over the epochs that ended within each seed's script time: "
            f"{100 * within:.1f}% (the check below uses this).",
        ]
    if "reused" in context:
        kept = "; ".join(
            f"{kind} seeds {', '.join(map(str, seeds))}"
            for kind, seeds in context["reused"]["seeds"].items()
        )
        lines += ["", f"Runs kept from an earlier run ({context['reused']['from']}): {kept}."]
    lines += [
        "",
        "Each check is the mean over the seeds both kinds ran of the seed's difference.",
        "",
        "| check | points | target |",
        "|---|---:|---:|",
    ]
    names = {
        "same_time_minus_script": ("(t) - (s)", ">= +8"),
        "epochs15_minus_script": ("(e) - (s)", ">= 0"),
        "resnet_minus_plain": ("(e) - (p)", "> 0"),
    }
    for key, value in checks.items():
        label, target = names[key]
        lines.append(f"| {label} | {100 * value:+.1f} | {target} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    home = Path(tempfile.mkdtemp(prefix="foodlab-recipe-home-"))
    cache = home / "cache"
    scan = scan_dataset(args.data)
    hp = resolve_hyperparameters(args.preset, {"image_size": args.image_size})
    split = load_or_create_split(scan, hp.val_fraction, hp.split_seed, cache, hp.test_fraction)
    context = {
        "data": str(args.data),
        "image_size": args.image_size,
        "seeds": args.seeds,
        "threads": args.threads,
        "cpus": available_cpus(),
        "cpu": cpu_name(),
        # What `precision: auto` trains foodlab's runs in here (the script stays float32).
        "foodlab_precision": PRECISION_NAMES[compute_dtype("auto", torch.device("cpu"))],
        "load_before": [round(x, 1) for x in os.getloadavg()],
        "torch": torch.__version__,
        "preset": args.preset,
        "train_size": len(split.train),
        "val_size": len(split.val),
        "test_size": len(split.test),
    }
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in LABELS}
    earlier = earlier_runs(args.reuse) if args.reuse else {}
    if earlier:
        earlier_context = json.loads(args.reuse.read_text())["context"]
        # No runs at all only reports the earlier file again: its context is the runs' own.
        context |= (
            earlier_context
            if not args.runs
            else {k: v for k, v in earlier_context.items() if "budget" in k}
        )
    context["seeds"] = seeds_to_report(args.seeds, earlier)
    reused: dict[str, list[int]] = {}
    try:
        for seed in context["seeds"]:
            fresh, kept = runs_to_do(seed, args, earlier)
            for kind, run in kept.items():
                run.setdefault("seed", seed)
                reused.setdefault(kind, []).append(seed)
            if reused:
                context["reused"] = {"from": str(args.reuse), "seeds": reused}
            script = kept.get("script")
            if "script" in fresh:
                script = run_script(args, seed, split, scan)
            if script is not None:
                runs["script"].append(script)
                write_results(args, runs, context)
            if "same_time" in fresh and script is not None:
                shutil.rmtree(cache / "images", ignore_errors=True)  # rebuilt inside the budget
                epochs, fixed = epochs_in_budget(args, seed, script["seconds"], cache)
                context[f"seed{seed}_budget"] = {
                    "seconds": script["seconds"],
                    "epochs": epochs,
                    "fixed_seconds": fixed,
                }
                run = run_foodlab(args, seed, "resnet34", epochs, cache)
                run["best_val_within_budget"] = best_within(run, script["seconds"])
                runs["same_time"].append(run)
            elif "same_time" in kept and script is not None:
                run = kept["same_time"]
                run["best_val_within_budget"] = best_within(run, script["seconds"])
                runs["same_time"].append(run)
            for key, arch in (("epochs15", "resnet34"), ("plain15", "plain34")):
                if key in fresh:
                    runs[key].append(run_foodlab(args, seed, arch, args.epochs, cache))
                elif key in kept:
                    runs[key].append(kept[key])
            write_results(args, runs, context)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print((args.out / "recipe.md").read_text())


if __name__ == "__main__":
    main()
