"""How fast the dashboard draws with 10,000 jobs and 300,000 epoch rows in the database.

Two `foodlab api` processes side by side, one on a database of `--jobs` finished jobs with
`--epochs` epoch rows each (10,000 x 30 = 300,000 by default), one on a database of 20 jobs;
headless Chromium (Debian's chromium) opens the jobs page and the compare page of 20 jobs on
each, interleaved over `--rounds` rounds, each in a fresh browser context (nothing cached).
The time measured is the page's own `window.foodlabRenderedAt`: milliseconds from the start of
navigation until the jobs table is filled (jobs page) or the first chart is drawn (compare
page). Target: under 1,000 ms at 10,000 jobs.

    .venv/bin/python bench/ui_render.py [--jobs 10000] [--epochs 30] [--rounds 5]
        [--results-dir bench/results]

Writes bench/results/ui_render.json and ui_render.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import insert

from core.db import open_session
from core.migrate import upgrade
from core.specs import DEFAULT_PRESET, resolve_hyperparameters
from core.tables import Dataset, EpochMetric, Job, JobStatus, utcnow
from models import STAGES

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARCHITECTURES = ("plain34", "resnet34", "se_resnet34", "preact_resnet34")
COMPARED = 20
TARGET_MS = 1000.0
CLASSES = ["bakso", "gado-gado", "nasi-goreng", "rendang", "sate"]


LOAD_AT_START = os.getloadavg()[0]  # other work on the machine skews absolute times


def epoch_rows(job_id: int, epochs: int, rng: random.Random) -> list[dict]:
    ceiling = rng.uniform(0.5, 0.85)
    rows = []
    for epoch in range(1, epochs + 1):
        progress = 1 - math.exp(-epoch / 8)
        val_accuracy = ceiling * progress + rng.uniform(-0.03, 0.03)
        train_accuracy = min(1.0, val_accuracy + 0.1 * progress)
        rows.append(
            {
                "job_id": job_id,
                "epoch": epoch,
                "train_loss": 1.6 - 1.1 * progress,
                "train_accuracy": train_accuracy,
                "val_loss": 1.6 - 0.9 * progress + rng.uniform(0, 0.1),
                "val_accuracy": val_accuracy,
                "lr": 0.05 * 0.5 * (1 + math.cos(math.pi * epoch / epochs)),
                "epoch_seconds": rng.uniform(9, 11),
                "train_images_per_second": rng.uniform(60, 70),
                "generalization_gap": train_accuracy - val_accuracy,
                "grad_norms": {s: rng.uniform(0.05, 3.0) * (6 - i) for i, s in enumerate(STAGES)},
                "is_best": False,
            }
        )
    return rows


def seed(database: str, jobs: int, epochs: int) -> None:
    """`jobs` succeeded jobs (4 architectures x 3 seeds, repeating) with `epochs` rows each."""
    upgrade(database)
    rng = random.Random(0)
    hyper = resolve_hyperparameters(DEFAULT_PRESET, {"epochs": epochs, "image_size": 64})
    finished = utcnow() - timedelta(days=100)
    with closing(open_session(database)) as session:
        session.add(
            Dataset(
                name="snacks",
                path="/data/snacks",
                source="folder",
                fingerprint="0" * 64,
                classes=CLASSES,
                num_images=200,
                skipped=[],
                counts={c: {"total": 40, "train": 32, "val": 8} for c in CLASSES},
            )
        )
        session.flush()
        job_rows, metric_rows = [], []
        for index in range(jobs):
            curve = epoch_rows(index + 1, epochs, rng)
            best = max(curve, key=lambda row: row["val_accuracy"])
            best["is_best"] = True
            end = finished + timedelta(minutes=5 * index)
            job_rows.append(
                {
                    "id": index + 1,
                    "dataset_id": 1,
                    "status": JobStatus.succeeded,
                    "architecture": ARCHITECTURES[(index // 3) % len(ARCHITECTURES)],
                    "architecture_options": {},
                    "preset": DEFAULT_PRESET,
                    "queue": "cpu",
                    "hyperparameters": hyper.model_dump() | {"seed": index % 3},
                    "group_id": f"{index // 3:08x}-0000-4000-8000-000000000000",
                    "repeat_index": index % 3,
                    "created_at": end - timedelta(minutes=5),
                    "started_at": end - timedelta(minutes=5),
                    "finished_at": end,
                    "attempts": 1,
                    "progress_epoch": epochs,
                    "progress_percent": 100.0,
                    "num_parameters": 21_287_237,
                    "gflops": 0.598,
                    "device": "cpu",
                    "run_info": {"inference_ms": 4.0, "val_size": 40},
                    "best_epoch": best["epoch"],
                    "best_val_accuracy": best["val_accuracy"],
                    "best_val_loss": best["val_loss"],
                }
            )
            metric_rows.extend(curve)
        for table, rows in ((Job, job_rows), (EpochMetric, metric_rows)):
            for start in range(0, len(rows), 5000):
                session.execute(insert(table), rows[start : start + 5000])
        session.commit()


class Api:
    def __init__(self, home: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOODLAB_")}
        env.update(FOODLAB_HOME=str(home), OMP_NUM_THREADS="1")
        self.log = home / "api.log"
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("foodlab")), "api", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    # First calls build caches (architecture summaries): not what is measured.
                    httpx.get(f"{self.url}/architectures", timeout=120)
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        raise SystemExit(f"foodlab api did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def render_ms(browser: Browser, url: str, ready: str) -> float:
    """Milliseconds from navigation start to the page's first data drawn, in a fresh context."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.wait_for_function("window.foodlabRenderedAt !== undefined", timeout=60_000)
        page.wait_for_selector(ready, timeout=60_000)
        if errors:
            raise SystemExit(f"{url}: {errors}")
        return float(page.evaluate("window.foodlabRenderedAt"))
    finally:
        context.close()


PAGES = {
    "jobs": ("/ui/", "#jobs-table tbody tr[data-job-id]"),
    "compare": ("/ui/compare?jobs={ids}", "#chart-curves[data-points]"),
}


def measure(browser: Browser, apis: dict[str, Api], jobs: dict[str, int], rounds: int) -> dict:
    times: dict[str, dict[str, list[float]]] = {size: {p: [] for p in PAGES} for size in apis}
    for _ in range(rounds):
        for size, api in apis.items():  # interleaved: load from other processes hits both
            newest = jobs[size]
            ids = ",".join(str(i) for i in range(newest - COMPARED + 1, newest + 1))
            for page, (path, ready) in PAGES.items():
                times[size][page].append(render_ms(browser, api.url + path.format(ids=ids), ready))
    return times


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples), 1),
        "max_ms": round(max(samples), 1),
        "samples_ms": [round(s, 1) for s in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--results-dir", default=str(RESULTS), help="where results are written")
    args = parser.parse_args()
    jobs = {"large": args.jobs, "small": COMPARED}
    with tempfile.TemporaryDirectory(prefix="ui-render-") as scratch:
        apis = {}
        for size, count in jobs.items():
            home = Path(scratch, size)
            home.mkdir()
            started = time.perf_counter()
            seed(f"sqlite:///{home / 'foodlab.db'}", count, args.epochs)
            print(
                f"{size}: {count} jobs, {count * args.epochs} epoch rows seeded in "
                f"{time.perf_counter() - started:.1f} s"
            )
            apis[size] = Api(home)
        try:
            for api in apis.values():
                api.wait_ready()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                measure(browser, apis, jobs, 1)  # warm-up round, not kept
                load_before = os.getloadavg()[0]
                times = measure(browser, apis, jobs, args.rounds)
                load = (load_before, os.getloadavg()[0])
                browser.close()
        finally:
            for api in apis.values():
                api.stop()
    report(args, jobs, times, load)


def report(
    args: argparse.Namespace, jobs: dict[str, int], times: dict, load: tuple[float, float]
) -> None:
    results = {
        "command": "python bench/ui_render.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{LOAD_AT_START:.1f} at the start",
        "load_average_1min": {"before": round(load[0], 1), "after": round(load[1], 1)},
        "database": "SQLite (embedded default)",
        "jobs": jobs,
        "epoch_rows": {s: n * args.epochs for s, n in jobs.items()},
        "compared_jobs": COMPARED,
        "rounds": args.rounds,
        "target_ms": TARGET_MS,
        "pages": {page: {size: summary(times[size][page]) for size in jobs} for page in PAGES},
    }
    for sizes in results["pages"].values():
        sizes["ratio_large_to_small"] = round(
            sizes["large"]["median_ms"] / sizes["small"]["median_ms"], 2
        )
        sizes["meets_target"] = sizes["large"]["max_ms"] < TARGET_MS
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ui_render.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Dashboard render time",
        "",
        f"`{results['command']}` on {results['machine']}, 1-minute load average "
        f"{load[0]:.1f} before and {load[1]:.1f} after the measured rounds, "
        f"{results['database']}. Time from the "
        "start of navigation to the jobs table filled / the compare page's first chart drawn, "
        f"in headless Chromium, a fresh context per load, {args.rounds} interleaved rounds.",
        "",
        f"| page | {jobs['large']:,} jobs, {jobs['large'] * args.epochs:,} epoch rows: median "
        f"(max) | {jobs['small']} jobs: median (max) | ratio | under {TARGET_MS:.0f} ms |",
        "|---|---:|---:|---:|---|",
    ]
    for page, sizes in results["pages"].items():
        label = "jobs (first page of 50)" if page == "jobs" else f"compare ({COMPARED} jobs)"
        lines.append(
            f"| {label} | {sizes['large']['median_ms']:.0f} ms ({sizes['large']['max_ms']:.0f}) | "
            f"{sizes['small']['median_ms']:.0f} ms ({sizes['small']['max_ms']:.0f}) | "
            f"{sizes['ratio_large_to_small']:.2f} | {'yes' if sizes['meets_target'] else 'no'} |"
        )
    (folder / "ui_render.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
