"""Training throughput of foodlab's engine against a bare loop and a typical reference loop.

    .venv/bin/python bench/train_throughput.py [--data DIR] [--epochs 3]

Measures, in one run, ResNet-34 training images/second with the same model, optimizer and
batch size:
  (a) bare      a loop over tensors already in memory: the ceiling;
  (b) reference torchvision ImageFolder + PIL decode every epoch + DataLoader, as
                torchvision's references/classification/train.py does;
  (c) engine    foodlab's `workers.engine.train` (decode-once cache, tensor augmentation);
  (d) pipelines the data pipelines alone, no model: images/second delivered by foodlab's
                (cache + batched tensor transforms) against ImageFolder + PIL.
  (e) cache      building the decode-once image cache of --cache-data at 64 and 224 px:
                images/second and how many cores it kept busy (CPU time / wall time).
Targets on CPU: (c)/(a) >= 0.9, (c)/(b) >= 1.0, (d) >= 5x. With --precision bfloat16 (or
auto on a CPU with native bf16) the bare loop runs in bf16 too, and a float32 bare loop
(a32) joins the turns: (c)/(a) >= 0.9 and (c)/(a32) >= 1.35.

On CUDA the defaults switch to 224x224, bf16 autocast, channels_last and `standard`
augmentation (run on the GPU by the engine).

Waiting for data, `--sizes 64,224 --batches 32,256 [--compile no|yes|both]` (a separate
report, one row per size, batch and compile mode): (c) the engine as it runs, against (p)
the very same engine (same augmentation, gradient norms, tallies and syncs) fed batches
already read into host memory (pinned on CUDA) before each epoch starts, and (a) the bare
loop. The share of time waiting for data is 1 - (c)/(p): the only difference between the
two is where batches come from.
1 - (c)/(a), which the report gave before, counted augmentation, gradient norms and syncs as
waiting. `--synth N` trains on N generated images per class instead of --data,
so that batch 256 has enough steps per epoch.

Images/second count the training phase only (data loading included, evaluation and
checkpoints excluded): the median over epochs, skipping the first (warm-up: allocator,
oneDNN/cuDNN kernel choice, page cache). Results go to bench/results/train_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from core.settings import get_settings
from core.specs import (
    ArchitectureSpec,
    EpochMetrics,
    Hyperparameters,
    TrainSpec,
    resolve_hyperparameters,
)
from models import build_model
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD, default_resize_size
from workers.engine import TrainingCallback, train
from workers.engine.augment import BatchTransform
from workers.engine.data import batch_plan, iterate_batches, prepare_data
from workers.engine.image_cache import decode_threads
from workers.engine.optim import build_optimizer
from workers.engine.runtime import Runtime, available_cpus, select_runtime

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "indonesian-snacks"
RESULTS = REPO / "bench" / "results"
DEFAULT_CACHE_DATA = REPO.parent / "shared" / "datasets" / "food101-dev5"
TARGETS = {
    "engine_vs_bare": 0.9,
    "engine_vs_reference": 1.0,
    "pipeline_speedup": 5.0,
    "engine_vs_bare_float32": 1.35,
}


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JPEG ImageFolder")
    parser.add_argument("--image-size", type=int, default=224 if cuda else 64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--epochs",
        type=int,
        default=3 if not cuda else 6,
        help="per loop; the first is warm-up and not counted",
    )
    parser.add_argument(
        "--augmentation", default="standard" if cuda else "none", choices=["none", "standard"]
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=available_cpus(),
        help="DataLoader processes of the reference loop (torchvision: -j)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=available_cpus(),
        help="torch intra-op threads for every loop (1 on a busy shared machine)",
    )
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"]
    )
    parser.add_argument(
        "--cache-data",
        type=Path,
        default=DEFAULT_CACHE_DATA,
        help="photos whose image-cache build is timed at 64 and 224 px",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--name", default="train_throughput", help="report file names: NAME.json, NAME.md"
    )
    parser.add_argument("--sizes", help="comma-separated image sizes: the data-wait report")
    parser.add_argument("--batches", help="comma-separated batch sizes: the data-wait report")
    parser.add_argument(
        "--compile",
        choices=["no", "yes", "both"],
        default="no",
        help="torch.compile in the data-wait report (both: a row of each)",
    )
    parser.add_argument(
        "--synth", type=int, default=0, help="generated photos per class instead of --data"
    )
    return parser.parse_args()


def hyperparameters(args: argparse.Namespace) -> Hyperparameters:
    """The reference study's recipe (plain SGD) at the benchmark's size, batch and augmentation."""
    return resolve_hyperparameters(
        "reference",
        {
            "epochs": args.epochs,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "augmentation": args.augmentation,
            "device": "auto",
            "precision": args.precision,
        },
    )


def fresh_model(num_classes: int, runtime: Runtime) -> nn.Module:
    torch.manual_seed(0)
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    return build_model("resnet34", num_classes).to(runtime.device, memory_format=memory_format)


def timed(run: Callable[[], int], runtime: Runtime) -> float:
    """Images/second of `run`, which returns how many images it processed."""
    start = time.perf_counter()
    images = run()
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


class PlainLoop:
    """The textbook loop over any batches: (a) with in-memory tensors, (b) with a DataLoader."""

    def __init__(
        self,
        hp: Hyperparameters,
        runtime: Runtime,
        num_classes: int,
        batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    ) -> None:
        self.runtime, self.batches = runtime, batches
        self.model = fresh_model(num_classes, runtime)
        self.optimizer = build_optimizer(self.model, hp)  # one optimizer across epochs
        self.criterion = nn.CrossEntropyLoss()
        self.memory_format = (
            torch.channels_last if runtime.channels_last else torch.contiguous_format
        )

    def epoch(self) -> float:
        return timed(self._epoch, self.runtime)

    def _epoch(self) -> int:
        self.model.train()
        images = 0
        for inputs, labels in self.batches():
            inputs = inputs.to(
                self.runtime.device, non_blocking=True, memory_format=self.memory_format
            )
            labels = labels.to(self.runtime.device, non_blocking=True)
            with self.runtime.autocast():
                loss = self.criterion(self.model(inputs), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            images += len(labels)
        return images


def bare_batches(
    args: argparse.Namespace, runtime: Runtime, num_classes: int, steps: int
) -> Callable[[], list[tuple[torch.Tensor, torch.Tensor]]]:
    """(a) One normalised random batch, already on the device, reused `steps` times."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    inputs = torch.randn(shape, generator=generator).to(runtime.device, memory_format=memory_format)
    labels = torch.randint(0, num_classes, (args.batch_size,), generator=generator)
    return lambda: [(inputs, labels)] * steps


def reference_dataset(args: argparse.Namespace) -> torchvision.datasets.ImageFolder:
    """torchvision's classification reference: PIL decode and transform, per image, per epoch."""
    if args.augmentation == "none":
        geometry = [T.Resize(default_resize_size(args.image_size)), T.CenterCrop(args.image_size)]
    else:
        geometry = [
            T.RandomResizedCrop(args.image_size, scale=(0.25, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.2, 0.2, 0.2),
        ]
    transform = T.Compose([*geometry, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return torchvision.datasets.ImageFolder(str(args.data), transform=transform)


def reference_loader(args: argparse.Namespace, runtime: Runtime) -> DataLoader:
    """(b) As torchvision's reference script: shuffled, -j worker processes, pinned on CUDA."""
    return DataLoader(
        reference_dataset(args),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=runtime.device.type == "cuda",
        drop_last=True,
    )


class TakeTurns(TrainingCallback):
    """After each epoch of the engine, one epoch of every other loop: they take turns.

    Taking turns spreads any change in the machine's load (other jobs on shared cores)
    evenly over the loops being compared, and the engine runs as one uninterrupted `train()`.
    """

    def __init__(self, others: dict[str, Callable[[], float]]) -> None:
        self.others = others
        self.rates: dict[str, list[float]] = {"engine": [], **{name: [] for name in others}}

    def on_epoch_end(self, metrics: EpochMetrics) -> None:
        # Training phase only, data loading included; evaluation and checkpoints excluded.
        self.rates["engine"].append(metrics.train_images_per_second)
        for name, epoch in self.others.items():
            self.rates[name].append(epoch())
        print(
            "  "
            + ", ".join(f"{name} {values[-1]:.1f}" for name, values in self.rates.items())
            + " images/s",
            flush=True,
        )


def steady_rate(values: list[float]) -> float:
    """The median over every epoch but the first (warm-up: allocator, kernel choice, caches);
    a median, so that one epoch disturbed by another job on the machine does not skew it."""
    return statistics.median(values[1:] or values)


class PipelineLoop:
    """(d) foodlab's data path alone: cache rows -> normalised tensors on the device."""

    def __init__(self, args: argparse.Namespace, runtime: Runtime, work: Path) -> None:
        self.hp, self.runtime = hyperparameters(args), runtime
        self.data = prepare_data(args.data, self.hp, work / "cache")
        self.transform = BatchTransform(
            image_size=self.hp.image_size,
            augmentation=self.hp.augmentation,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            device=runtime.device,
            channels_last=runtime.channels_last,
        )
        self.crop = None if self.transform.needs_full_image else self.hp.image_size
        self.epochs = 0

    def epoch(self) -> float:
        return timed(self._epoch, self.runtime)

    def _epoch(self) -> int:
        self.epochs += 1
        generator = torch.Generator().manual_seed(self.epochs)
        plan = batch_plan(len(self.data.train), self.hp.batch_size, generator)
        batches = iterate_batches(
            self.data, self.data.train, plan, crop=self.crop, num_workers=0, pin_memory=False
        )
        return sum(len(self.transform(images, generator)) for images, _ in batches)


def reference_pipeline(loader: DataLoader, runtime: Runtime) -> Callable[[], float]:
    """(d) The ImageFolder + PIL data path alone, delivered to the device."""
    return lambda: timed(lambda: sum(len(x.to(runtime.device)) for x, _ in loader), runtime)


def interleaved(loops: dict[str, Callable[[], float]], epochs: int) -> dict[str, list[float]]:
    """Images/second of each loop in each epoch, the loops taking turns."""
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(epochs):
        for name, epoch in loops.items():
            rates[name].append(epoch())
        print(
            "  " + ", ".join(f"{name} {v[-1]:.0f}" for name, v in rates.items()) + " images/s",
            flush=True,
        )
    return rates


def cache_builds(data: Path, work: Path) -> dict[str, dict[str, float]]:
    """(e) Building the image cache from scratch at 64 and 224 px: images/second, and cores
    kept busy (this process's CPU time over wall time; every core would be the CPU count)."""
    builds = {}
    for size in (64, 224):
        hp = resolve_hyperparameters("reference", {"image_size": size})
        cpu, wall = time.process_time(), time.perf_counter()
        prepared = prepare_data(data, hp, work / f"cache-{size}")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        images = len(prepared.train) + len(prepared.val) + len(prepared.test)
        builds[str(size)] = {
            "images": images,
            "seconds": wall,
            "images_per_second": images / wall,
            "cores_busy": cpu / wall,
            "decode_threads": decode_threads(get_settings()),
        }
        print(
            f"  cache at {size} px: {images / wall:.0f} images/s, {cpu / wall:.2f} cores busy",
            flush=True,
        )
    return builds


def conditions(args: argparse.Namespace, runtime: Runtime) -> dict[str, object]:
    return {
        "device": runtime.describe(),
        "cpus_available": available_cpus(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": os.getloadavg(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "data": str(args.data),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs_per_loop": args.epochs,
        "augmentation": args.augmentation,
        "reference_loader_workers": args.workers,
    }


def write_report(report: dict[str, object], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    ips, ratios, cond = report["images_per_second"], report["ratios"], report["conditions"]
    lines = [
        "# Training throughput (bench/train_throughput.py)",
        "",
        f"ResNet-34, {cond['image_size']}x{cond['image_size']}, batch {cond['batch_size']}, "
        f"augmentation `{cond['augmentation']}`, on {cond['device']}; "
        f"{cond['cpus_available']} CPUs available, load average before "
        f"{', '.join(f'{v:.1f}' for v in cond['load_average_before'])}. "
        f"Data: {cond['data']}.",
        "",
        "| loop | images/s |",
        "|---|---:|",
        f"| (a) bare loop, tensors in memory | {ips['bare']:.1f} |",
        f"| (b) reference: ImageFolder + PIL every epoch | {ips['reference']:.1f} |",
        *(
            [
                f"| (a32) bare loop in float32 | {ips['bare_float32']:.1f} |",
                f"| (a') bare loop, other memory format | {ips['bare_other_layout']:.1f} |",
            ]
            if "bare_float32" in ips
            else []
        ),
        f"| (c) foodlab engine | {ips['engine']:.1f} |",
        f"| (d) data only: foodlab pipeline | {ips['pipeline_foodlab']:.0f} |",
        f"| (d) data only: ImageFolder + PIL pipeline | {ips['pipeline_reference']:.0f} |",
        "",
        "| ratio | value | target |",
        "|---|---:|---:|",
        f"| (c)/(a) engine vs bare | {ratios['engine_vs_bare']:.2f} | >= 0.9 |",
        f"| (c)/(b) engine vs reference | {ratios['engine_vs_reference']:.2f} | >= 1.0 |",
        f"| (d) pipeline speed-up | {ratios['pipeline_speedup']:.1f}x | >= 5x |",
        *(
            [
                f"| (c)/(a32) engine vs float32 bare | {ratios['engine_vs_bare_float32']:.2f} | "
                ">= 1.35 |"
            ]
            if "engine_vs_bare_float32" in ratios
            else []
        ),
        "",
        f"Image cache built once in {report['cache_build_seconds']:.1f} s "
        "(not in the rates above).",
    ]
    if report.get("cache_builds"):
        lines += [
            "",
            "| (e) image cache build | images | images/s | cores busy | threads |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {size} px | {b['images']} | {b['images_per_second']:.0f} | "
            f"{b['cores_busy']:.2f} | {b['decode_threads']} |"
            for size, b in report["cache_builds"].items()
        ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def preloaded(batches: list[tuple[torch.Tensor, torch.Tensor]]):  # noqa: ANN201
    """Batches already in memory, served as iterate_batches serves them (a closable generator)."""
    yield from batches


def engine_on_prepared_batches(pin: bool) -> Callable[..., object]:
    """An iterate_batches that reads every batch of the plan into memory when called, before
    the epoch's clock starts (the engine calls it before train_one_epoch), then serves them."""

    def read(*args: object, **kwargs: object) -> object:
        kwargs |= {"num_workers": 0, "pin_memory": False, "buffers": None}
        batches = [
            (images.pin_memory() if pin else images.clone(), labels.clone())
            for images, labels in iterate_batches(*args, **kwargs)  # type: ignore[arg-type]
        ]
        return preloaded(batches)

    return read


def generated_images(out: Path, per_class: int, size: int, classes: int = 5) -> Path:
    """An ImageFolder of JPEG noise tinted per class: milliseconds per image (the demo's
    drawn dishes take a quarter of a second each at 256 px, too slow for thousands)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = out / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 160, (size, size, 3), dtype=np.uint8)
            pixels[..., label % 3] += 90
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return out


def data_wait(args: argparse.Namespace, work: Path, report: dict[str, object]) -> dict[str, object]:
    """(c) engine, (p) the engine fed prepared batches, (a) bare loop, at each size and batch;
    the report is written again after each row (a run cut short keeps what it measured)."""
    import workers.engine.run as engine_run

    data = args.data
    if args.synth:
        print(f"generating {args.synth} images per class at 256 px", flush=True)
        data = generated_images(work / "synth", args.synth, 256)
    rows = []
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.compile]
    combos = [  # uncompiled rows first: they are the cheap ones
        (size, batch, compiled)
        for compiled in modes
        for size in [int(v) for v in args.sizes.split(",")]
        for batch in [int(v) for v in args.batches.split(",")]
    ]
    for size, batch, compiled in combos:
        run_args = argparse.Namespace(**{**vars(args), "image_size": size, "batch_size": batch})
        hp = hyperparameters(run_args).model_copy(update={"compile": compiled})
        runtime = select_runtime("auto", args.precision)
        spec = TrainSpec(architecture=ArchitectureSpec(name="resnet34"), hyperparameters=hp)
        cache = work / "cache"
        engine = train(spec, data, work / f"engine-{size}-{batch}-{compiled}", cache_dir=cache)
        original = engine_run.iterate_batches
        engine_run.iterate_batches = engine_on_prepared_batches(  # type: ignore[assignment]
            runtime.device.type == "cuda"
        )
        try:
            prepared = train(
                spec, data, work / f"prepared-{size}-{batch}-{compiled}", cache_dir=cache
            )
        finally:
            engine_run.iterate_batches = original
        train_size = len(prepare_data(data, hp, cache).train)
        num_classes = len(engine.class_names)
        steps = max(1, train_size // batch)
        bare = PlainLoop(
            hp, runtime, num_classes, bare_batches(run_args, runtime, num_classes, steps)
        )
        bare_rates = [bare.epoch() for _ in range(args.epochs)]
        row = {
            "image_size": size,
            "batch_size": batch,
            "compile": compiled,
            "steps_per_epoch": steps,
            "device": runtime.describe(),
            "engine": steady_rate([m.train_images_per_second for m in engine.epochs]),
            "prepared": steady_rate([m.train_images_per_second for m in prepared.epochs]),
            "bare": steady_rate(bare_rates),
        }
        row["data_wait_share"] = max(0.0, 1 - row["engine"] / row["prepared"])
        row["engine_vs_bare"] = row["engine"] / row["bare"]
        print(
            f"  {size} px, batch {batch}{', compiled' if compiled else ''}: engine "
            f"{row['engine']:.1f}, prepared {row['prepared']:.1f}, bare {row['bare']:.1f} "
            f"images/s; waiting for data {row['data_wait_share']:.1%}",
            flush=True,
        )
        rows.append(row)
        write_data_wait_report(report | {"data": str(data), "rows": rows}, args.out, args.name)
    return {"data": str(data), "rows": rows}


def write_data_wait_report(report: dict[str, object], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    cond = report["conditions"]
    lines = [
        "# Training throughput and waiting for data (bench/train_throughput.py)",
        "",
        f"ResNet-34, augmentation `{cond['augmentation']}`, precision {cond['precision']}, "
        f"{cond['epochs_per_loop']} epochs per loop (median over all but the first), on "
        f"{cond['device']}; torch {cond['torch']}; load average before "
        f"{', '.join(f'{v:.1f}' for v in cond['load_average_before'])}. Data: {report['data']}.",
        "",
        "(c) engine; (p) the same engine fed batches already in memory; (a) bare loop. "
        "Waiting for data = 1 - (c)/(p).",
        "",
        "| size | batch | compiled | steps/epoch | (c) images/s | (p) images/s | (a) images/s "
        "| waiting for data | (c)/(a) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['image_size']} | {r['batch_size']} | {'yes' if r['compile'] else 'no'} | "
        f"{r['steps_per_epoch']} | {r['engine']:.1f} | {r['prepared']:.1f} | {r['bare']:.1f} | "
        f"{r['data_wait_share']:.1%} | {r['engine_vs_bare']:.2f} |"
        for r in report["rows"]
    ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    runtime = select_runtime("auto", args.precision)
    if args.sizes or args.batches:
        args.sizes = args.sizes or str(args.image_size)
        args.batches = args.batches or str(args.batch_size)
        work = Path(tempfile.mkdtemp(prefix="foodlab-bench-"))
        report: dict[str, object] = {
            "conditions": conditions(args, runtime) | {"precision": runtime.precision}
        }
        try:
            report |= data_wait(args, work, report)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report["conditions"]["load_average_after"] = os.getloadavg()  # type: ignore[index]
        write_data_wait_report(report, args.out, args.name)
        print((args.out / f"{args.name}.md").read_text())
        return
    report: dict[str, object] = {"conditions": conditions(args, runtime)}
    work = Path(tempfile.mkdtemp(prefix="foodlab-bench-"))
    try:
        started = time.perf_counter()
        train_size = len(prepare_data(args.data, hyperparameters(args), work / "cache").train)
        report["cache_build_seconds"] = time.perf_counter() - started
        num_classes = len(reference_dataset(args).classes)
        hp = hyperparameters(args)
        loader = reference_loader(args, runtime)
        steps = train_size // args.batch_size  # what the engine trains per epoch
        print("training loops, taking turns: (c) engine, (a) bare, (b) reference")
        others = {
            "bare": PlainLoop(
                hp, runtime, num_classes, bare_batches(args, runtime, num_classes, steps)
            ).epoch,
            "reference": PlainLoop(hp, runtime, num_classes, lambda: loader).epoch,
        }
        if runtime.amp_dtype is not None:  # the float32 ceiling that the precision beats
            fp32 = select_runtime("auto", "float32")
            others["bare_float32"] = PlainLoop(
                hp, fp32, num_classes, bare_batches(args, fp32, num_classes, steps)
            ).epoch
            # The other memory format in the same precision: is the engine's choice faster?
            other = replace(runtime, channels_last=not runtime.channels_last)
            others["bare_other_layout"] = PlainLoop(
                hp, other, num_classes, bare_batches(args, other, num_classes, steps)
            ).epoch
        turns = TakeTurns(others)
        spec = TrainSpec(architecture=ArchitectureSpec(name="resnet34"), hyperparameters=hp)
        train(spec, args.data, work / "run", callbacks=[turns], cache_dir=work / "cache")
        per_epoch = turns.rates
        print("data pipelines (d):")
        per_epoch |= interleaved(
            {
                "pipeline_foodlab": PipelineLoop(args, runtime, work).epoch,
                "pipeline_reference": reference_pipeline(loader, runtime),
            },
            max(args.epochs, 3),
        )
        if args.cache_data.is_dir():
            print(f"image cache builds (e) of {args.cache_data}:")
            report["cache_builds"] = cache_builds(args.cache_data, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rates = {name: steady_rate(values) for name, values in per_epoch.items()}
    report["images_per_second"] = rates
    report["per_epoch_images_per_second"] = per_epoch
    report["ratios"] = {
        "engine_vs_bare": rates["engine"] / rates["bare"],
        "engine_vs_reference": rates["engine"] / rates["reference"],
        "pipeline_speedup": rates["pipeline_foodlab"] / rates["pipeline_reference"],
    }
    if "bare_float32" in rates:
        report["ratios"]["engine_vs_bare_float32"] = rates["engine"] / rates["bare_float32"]
    report["targets"] = TARGETS
    report["conditions"]["load_average_after"] = os.getloadavg()
    write_report(report, args.out, args.name)
    print((args.out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
