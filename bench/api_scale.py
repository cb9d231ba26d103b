"""Read endpoints at 100, 1,000 and 10,000 stored jobs, on SQLite and PostgreSQL.

For each database, three API processes (uvicorn) serve three databases seeded with N finished
jobs each (bench/scale_rows.py: the rows a real job stores, 30 epoch rows each, 1 in 25
failed, spread over two datasets, one real ResNet-34 bundle at 64x64 behind every succeeded
job). Every endpoint is then timed on the three side by side: rounds of keep-alive requests
that go to N=100, 1,000, 10,000 in turn, so load from elsewhere on the machine falls on all
three alike. Median and p95 per endpoint and N; the ratio of the N=10,000 to the N=100 median.

Targets: at N=10,000 every JSON read answers a page in under 50 ms (p50), and for every
endpoint (their answers do not grow with N) p50(10,000) / p50(100) <= 1.5, POST /predict with
one image and GET /models/serving included.
Results: bench/results/api_scale.{json,md}.

    .venv/bin/python -m bench.api_scale [--sizes 100,1000,10000] [--rounds 6] [--per-round 6]
        [--databases sqlite,postgresql] [--results-dir bench/results]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from PIL import Image
from sqlalchemy import text

import models
from bench.predict_latency import Upload, free_port, wait_until_up
from bench.scale_rows import CLASS_NAMES, add_datasets, seed_jobs
from core.db import get_engine, open_session, refresh_statistics
from core.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PHOTOS = REPO.parent / "shared" / "datasets" / "indonesian-snacks"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
EPOCHS = 30
PAGE_TARGET_MS = 50.0
RATIO_TARGET = 1.5
COMPARED = 20  # jobs in /compare and /compare/curves.png


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    json_page: bool = True  # held to the 50 ms target


def endpoints() -> list[Endpoint]:
    # The compared jobs are the first twenty, identical rows at every N: same answer size.
    compared = ",".join(str(job_id) for job_id in range(1, COMPARED + 1))
    return [
        Endpoint("GET /jobs", "GET", "/jobs"),
        Endpoint("GET /jobs?status=succeeded", "GET", "/jobs?status=succeeded"),
        Endpoint(
            "GET /jobs?architecture=&status=", "GET", "/jobs?architecture=resnet34&status=succeeded"
        ),
        Endpoint("GET /jobs?dataset_id=&status=failed", "GET", "/jobs?dataset_id=2&status=failed"),
        Endpoint("GET /jobs/{id}", "GET", "/jobs/7"),
        Endpoint("GET /jobs/{id}/metrics", "GET", "/jobs/7/metrics"),
        Endpoint("GET /datasets", "GET", "/datasets"),
        Endpoint("GET /models", "GET", "/models"),
        Endpoint("GET /models?dataset_id=", "GET", "/models?dataset_id=1"),
        Endpoint("GET /models/serving", "GET", "/models/serving"),
        Endpoint(f"GET /compare ({COMPARED} jobs)", "GET", f"/compare?jobs={compared}"),
        Endpoint(
            f"GET /compare/curves.png ({COMPARED} jobs)",
            "GET",
            f"/compare/curves.png?jobs={compared}",
            json_page=False,
        ),
        Endpoint("POST /predict (1 image)", "POST", "/predict", json_page=False),
    ]


# ---------------------------------------------------------------- databases and servers


@contextmanager
def database(kind: str, home: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{home / 'foodlab.db'}"
        return
    name = f"foodlab_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(name=name)
    finally:
        get_engine.cache_clear()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_bundle(home: Path) -> Path:
    path = home / "checkpoints" / "bundle.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    models.save_bundle(
        path,
        models.build_model("resnet34", len(CLASS_NAMES)),
        architecture={"name": "resnet34", "options": {}},
        class_names=CLASS_NAMES,
        preprocessing={
            "image_size": 64,
            "resize_size": 73,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        metadata={"bench": True},
    )
    return path


def seed(url: str, jobs: int, bundle: Path) -> float:
    """Seconds to migrate, insert and bring the statistics to what a running system has."""
    started = time.perf_counter()
    upgrade(url)
    with open_session(url) as session:
        datasets = add_datasets(session, 2)
        seed_jobs(session, jobs=jobs, dataset_ids=datasets, bundle_path=str(bundle), epochs=EPOCHS)
        session.commit()
    if url.startswith("sqlite"):
        refresh_statistics(url)  # as every finished job does
    else:
        with get_engine(url).connect() as connection:  # as autovacuum does after a bulk load
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE")
            )
    get_engine(url).dispose()
    return time.perf_counter() - started


@contextmanager
def api_server(home: Path, url: str) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "FOODLAB_HOME": str(home), "FOODLAB_DATABASE_URL": url}
    # A long keep-alive: the clients of the other sizes talk in between.
    command = [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--no-access-log",
               "--timeout-keep-alive", "600"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---------------------------------------------------------------- timing


class Client:
    """One keep-alive connection (the standard library's client: cheap on a shared CPU)."""

    def __init__(self, port: int, upload: Upload) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.upload = upload

    def call(self, endpoint: Endpoint) -> tuple[float, int]:
        """(milliseconds, response bytes) of one request."""
        body, headers = None, {}
        if endpoint.method == "POST":
            body, headers = self.upload.body, {"Content-Type": self.upload.content_type}
        started = time.perf_counter()
        self.connection.request(endpoint.method, endpoint.path, body, headers)
        response = self.connection.getresponse()
        payload = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise SystemExit(f"{endpoint.name} answered {response.status}: {payload[:300]!r}")
        return elapsed, len(payload)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(
    clients: dict[int, Client], endpoint: Endpoint, rounds: int, per_round: int
) -> dict[int, dict[str, float]]:
    """Interleaved rounds over the sizes; a few untimed requests first (caches, first load:
    the PNG is drawn once, then answered from the API's figure cache while its rows stay)."""
    for client in clients.values():
        for _ in range(3):
            client.call(endpoint)
    timings: dict[int, list[float]] = {size: [] for size in clients}
    sizes: dict[int, int] = {}
    for _ in range(rounds):
        for size, client in clients.items():
            for _ in range(per_round):
                elapsed, sizes[size] = client.call(endpoint)
                timings[size].append(elapsed)
    return {
        size: {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 0.95), 2),
            "requests": len(values),
            "response_bytes": sizes[size],
        }
        for size, values in timings.items()
    }


def photo_upload() -> Upload:
    files = sorted(PHOTOS.glob("*/*.jpg"))[:1]
    if files:
        return Upload.of((files[0].name, files[0].read_bytes()))
    image = Image.new("RGB", (320, 240), (180, 120, 60))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return Upload.of(("drawn.jpg", buffer.getvalue()))


def run_database(kind: str, sizes: list[int], rounds: int, per_round: int) -> dict[str, Any]:
    upload = photo_upload()
    with ExitStack() as stack:
        ports, seconds = {}, {}
        for size in sizes:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="api-scale-")))
            url = stack.enter_context(database(kind, home))
            seconds[size] = round(seed(url, size, write_bundle(home)), 1)
            print(f"{kind}: seeded {size} jobs in {seconds[size]} s", flush=True)
            ports[size] = stack.enter_context(api_server(home, url))
        clients = {size: Client(port, upload) for size, port in ports.items()}
        results = {}
        for endpoint in endpoints():
            results[endpoint.name] = measure(clients, endpoint, rounds, per_round)
            line = "  ".join(f"N={s}: {r['p50_ms']} ms" for s, r in results[endpoint.name].items())
            print(f"{kind} {endpoint.name}: {line}", flush=True)
    return {"seed_seconds": seconds, "endpoints": results}


# ---------------------------------------------------------------- targets and reports


def verdicts(results: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    small, large = min(sizes), max(sizes)
    rows = []
    for kind, per_db in results.items():
        for endpoint in endpoints():
            timing = per_db["endpoints"][endpoint.name]
            ratio = timing[large]["p50_ms"] / timing[small]["p50_ms"]
            page_ok = timing[large]["p50_ms"] < PAGE_TARGET_MS if endpoint.json_page else None
            # A filter that matches a handful of jobs at N=100 fills a whole page at 10,000:
            # its answer grows, and the ratio target is for answers that do not.
            grows = timing[large]["response_bytes"] > 1.1 * timing[small]["response_bytes"]
            rows.append(
                {
                    "database": kind,
                    "endpoint": endpoint.name,
                    "ratio": round(ratio, 2),
                    "answer_grows": grows,
                    "ratio_ok": None if grows else ratio <= RATIO_TARGET,
                    "page_ok": page_ok,
                }
            )
    return rows


def markdown(report: dict[str, Any]) -> str:
    sizes = report["sizes"]
    small, large = min(sizes), max(sizes)
    lines = [
        "# API read latency against the number of stored jobs",
        "",
        f"`{report['command']}` on {report['machine']} ({report['when']}). "
        f"{report['rounds']} rounds x {report['per_round']} keep-alive requests per endpoint "
        "and size, the sizes interleaved in each round (the PNG is drawn by the untimed first "
        "requests, then answered from the API's figure cache, which re-reads its rows). "
        "Jobs: 30 epoch rows each, 1 in 25 failed, two datasets.",
        "",
        f"Targets: p50 < {PAGE_TARGET_MS:.0f} ms for every JSON read at N={large:,}; "
        f"p50(N={large:,}) / p50(N={small:,}) <= {RATIO_TARGET} for every endpoint.",
        "",
    ]
    verdict = {(v["database"], v["endpoint"]): v for v in report["verdicts"]}
    for kind, per_db in report["results"].items():
        seeded = ", ".join(f"{size:,}: {s} s" for size, s in per_db["seed_seconds"].items())
        header = " | ".join(f"N={size:,} p50 / p95 ms" for size in sizes)
        lines += [f"## {kind}", "", f"Seeding (migrate, insert, statistics): {seeded}.", ""]
        lines += [f"| endpoint | {header} | ratio | targets |"]
        lines += ["|---|" + "---:|" * len(sizes) + "---:|---|"]
        for name, timing in per_db["endpoints"].items():
            cells = " | ".join(
                f"{timing[size]['p50_ms']:.1f} / {timing[size]['p95_ms']:.1f}" for size in sizes
            )
            v = verdict[(kind, name)]
            marks = [
                "answer grows (bytes x"
                f"{timing[large]['response_bytes'] / timing[small]['response_bytes']:.1f})"
                if v["ratio_ok"] is None
                else "ratio " + ("met" if v["ratio_ok"] else "**missed**")
            ]
            if v["page_ok"] is not None:
                marks.append("50 ms " + ("met" if v["page_ok"] else "**missed**"))
            lines.append(f"| {name} | {cells} | {v['ratio']:.2f} | {', '.join(marks)} |")
        lines.append("")
    missed = [v for v in report["verdicts"] if v["ratio_ok"] is False or v["page_ok"] is False]
    lines.append(
        "All targets met."
        if not missed
        else "Missed: " + "; ".join(f"{v['database']} {v['endpoint']}" for v in missed) + "."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=6)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--out", default="api_scale", help="results file name, no suffix")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where results are written")
    parser.add_argument(
        "--merge", nargs="+", metavar="JSON", help="only join earlier runs' results into --out"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if not args.merge and args.rounds * args.per_round < 30:
        parser.error("--rounds x --per-round: at least 30 requests per endpoint and size")
    results: dict[str, Any] = {}
    if args.merge:
        for path in args.merge:
            for kind, figures in json.loads(Path(path).read_text())["results"].items():
                results[kind] = {
                    "seed_seconds": {int(n): s for n, s in figures["seed_seconds"].items()},
                    "endpoints": {
                        name: {int(n): t for n, t in timing.items()}
                        for name, timing in figures["endpoints"].items()
                    },
                }
        write_report(results, sizes, args)
        return
    for kind in args.databases.split(","):
        results[kind] = run_database(kind, sizes, args.rounds, args.per_round)
        write_report(results, sizes, args)  # each database's figures as soon as they exist


LOAD_AT_START = os.getloadavg()[0]  # other work on the machine skews absolute times


def write_report(results: dict[str, Any], sizes: list[int], args: argparse.Namespace) -> None:
    report = {
        "command": "python -m bench.api_scale " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {LOAD_AT_START:.1f} at the start",
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sizes": sizes,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "results": results,
        "verdicts": verdicts(results, sizes),
    }
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / f"{args.out}.md").write_text(markdown(report))
    print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
