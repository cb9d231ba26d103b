"""POST /predict latency and throughput against the bare model, on real food photos.

Measures, in one run, with a randomly initialised ResNet-34 bundle at 224x224:
  (a) in-process: JPEG decode + the bundle's preprocessing + forward, one image;
  (b) POST /predict, one image, one client on loopback: p50 / p99 latency;
  (c) throughput with 8 concurrent clients, against the single-client throughput.
Targets (CPU): p50(b) / p50(a) <= 1.3 and throughput(8 clients) >= 1.5 x throughput(1 client).

The API runs as a uvicorn subprocess on a free loopback port with FOODLAB_HOME in a temporary
folder. The API serves in its default precision (bfloat16 on CPUs with native bf16, else
float32) unless --precision says otherwise; the in-process model (a) is prepared the same way.
Results go to bench/results/predict_latency[-PRECISION].{json,md}.

    .venv/bin/python -m bench.predict_latency [--requests 180] [--clients 8] [--precision P]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

import models
from core.db import session_scope
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Checkpoint, Dataset, Job, JobStatus
from models.preprocess import decode_for_size, resize_shorter_and_center_crop, upright_rgb

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO.parent / "shared" / "datasets" / "indonesian-snacks"
RESULTS = REPO / "bench" / "results"
IMAGE_SIZE = 224
TARGET_RATIO = 1.3
TARGET_SPEEDUP = 1.5


def load_photos(folder: Path, limit: int) -> list[tuple[str, bytes]]:
    files = sorted(folder.glob("*/*.jpg"))[:limit]
    if not files:
        raise SystemExit(f"no JPEG photos under {folder}")
    return [(path.name, path.read_bytes()) for path in files]


def write_model(settings: Settings, class_names: list[str]) -> Path:
    """A random-init ResNet-34 bundle plus the rows the training engine would leave."""
    path = settings.checkpoints_dir / "job-1" / "bundle.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    models.save_bundle(
        path,
        models.build_model("resnet34", len(class_names)),
        architecture={"name": "resnet34", "options": {}},
        class_names=class_names,
        preprocessing={
            "image_size": IMAGE_SIZE,
            "resize_size": 256,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        metadata={"bench": True},
    )
    with session_scope(settings.database) as session:
        dataset = Dataset(name="bench", path="-", source="folder", fingerprint="0" * 64)
        session.add(dataset)
        session.flush()
        job = Job(
            dataset_id=dataset.id,
            status=JobStatus.succeeded,
            architecture="resnet34",
            best_epoch=1,
            best_val_accuracy=0.5,
            best_val_loss=1.0,
            finished_at=datetime.now(UTC),
        )
        session.add(job)
        session.flush()
        session.add(
            Checkpoint(
                job_id=job.id,
                kind="bundle",
                epoch=1,
                path=str(path),
                size_bytes=path.stat().st_size,
                sha256="0" * 64,
            )
        )
    return path


def predict_in_process(bundle: models.Bundle, photo: tuple[str, bytes]) -> float:
    """(a): decode, the bundle's preprocessing, forward, top-3 (as the API does); ms."""
    started = time.perf_counter()
    opened = Image.open(io.BytesIO(photo[1]))
    image = decode_for_size(opened, bundle.preprocessing["resize_size"])
    models.probabilities(bundle.model, bundle.preprocess([image])).topk(3)
    return (time.perf_counter() - started) * 1000


def phone_photo_decode_ms(photo: tuple[str, bytes], repeats: int = 5) -> dict[str, float]:
    """CPU-ms to decode a 12-megapixel JPEG and crop it for the model: in full, and at the
    reduced JPEG scale the API uses (decode_for_size). The photos here are small, so one is
    enlarged to a phone camera's 4000x3000, with noise so that it compresses like a photo."""
    small = Image.open(io.BytesIO(photo[1])).convert("RGB")
    large = np.asarray(small.resize((4000, 3000), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-20, 20, large.shape)
    encoded = io.BytesIO()
    Image.fromarray((large + noise).clip(0, 255).astype(np.uint8)).save(encoded, "JPEG", quality=90)

    def decode(reduced: bool) -> None:
        image = Image.open(io.BytesIO(encoded.getvalue()))
        image = decode_for_size(image, 256) if reduced else upright_rgb(image)
        resize_shorter_and_center_crop(image, 256, IMAGE_SIZE)

    timings = {}
    for name, reduced in (("full", False), ("reduced", True)):
        started = time.process_time()
        for _ in range(repeats):
            decode(reduced)
        timings[name] = round((time.process_time() - started) / repeats * 1000, 1)
    return timings


def forward_images_per_second(
    model: torch.nn.Module, batch: int, passes: int = 1, repeats: int = 4
) -> float:
    """Images/s of bare forward passes of `batch` images, `passes` of them at once.

    What the batcher can gain without HTTP: batch 1 is one client's work, a batch of N the
    work of N clients in one pass, and two passes at once what the batcher's two runners do.
    """
    pixels = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    models.probabilities(model, pixels)  # warm-up: allocation and kernel choice

    def passes_back_to_back() -> None:
        for _ in range(repeats):
            models.probabilities(model, pixels)

    started = time.perf_counter()
    with ThreadPoolExecutor(passes) as pool:
        for future in [pool.submit(passes_back_to_back) for _ in range(passes)]:
            future.result()
    return passes * repeats * batch / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def api_server(home: Path, precision: str) -> Iterator[tuple[int, int]]:
    port = free_port()
    env = {**os.environ, "FOODLAB_HOME": str(home), "FOODLAB_PREDICT_PRECISION": precision}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the API exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the API did not answer at {url} within {timeout:.0f} s")


@dataclass(frozen=True)
class Upload:
    """A photo as the multipart body of POST /predict, encoded once before timing starts."""

    body: bytes
    content_type: str

    @classmethod
    def of(cls, photo: tuple[str, bytes]) -> Upload:
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{photo[0]}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        body = head + photo[1] + f"\r\n--{boundary}--\r\n".encode()
        return cls(body, f"multipart/form-data; boundary={boundary}")


class Client:
    """One keep-alive connection. The standard library's HTTP client, not httpx: on a 2-core
    machine the load generator shares the cores with the API, so it must cost little CPU."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, upload: Upload) -> float:
        """One POST /predict; its client-side latency in milliseconds."""
        started = time.perf_counter()
        self.connection.request(
            "POST", "/predict", upload.body, {"Content-Type": upload.content_type}
        )
        response = self.connection.getresponse()
        payload = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise SystemExit(f"POST /predict answered {response.status}: {payload[:300]!r}")
        return elapsed

    def close(self) -> None:
        self.connection.close()


def run_clients(
    port: int, uploads: list[Upload], clients: int, per_client: int
) -> tuple[list[float], float]:
    """Every client posts `per_client` photos back to back; latencies and wall time (s)."""

    def client_loop(index: int) -> list[float]:
        with closing(Client(port)) as client:
            return [
                client.post(uploads[(index * per_client + i) % len(uploads)])
                for i in range(per_client)
            ]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [ms for result in pool.map(client_loop, range(clients)) for ms in result]
    return latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "mean": round(statistics.fmean(values), 2),
        "n": len(values),
    }


def run(requests: int, clients: int, rounds: int, precision: models.Precision) -> dict[str, Any]:
    photos = load_photos(PHOTOS, limit=64)
    uploads = [Upload.of(photo) for photo in photos]
    class_names = sorted(p.name for p in PHOTOS.iterdir() if p.is_dir())
    in_process: list[float] = []
    single: list[float] = []
    loaded: list[float] = []
    loaded_wall = single_cpu = loaded_cpu = 0.0
    round_speedups: list[float] = []
    with tempfile.TemporaryDirectory(prefix="foodlab-bench-") as tmp:
        settings = Settings(home=Path(tmp))
        upgrade(settings.database)
        bundle = models.load_bundle(write_model(settings, class_names))
        # The dtype and layout the API serves with.
        bundle.model = models.prepare_for_inference(bundle.model, models.inference_dtype(precision))
        with api_server(settings.home, precision) as (port, pid), closing(Client(port)) as client:
            for photo, upload in zip(photos[:5], uploads, strict=False):
                predict_in_process(bundle, photo)  # warm-up; the first request loads the bundle
                client.post(upload)
            run_clients(port, uploads, clients, 2)
            # Rounds interleave the three measurements, and (a) alternates with (b), so that
            # load from other processes on a shared machine biases none of the ratios.
            per_round = max(1, requests // rounds)
            for round_index in range(rounds):
                for i in range(per_round):
                    index = (round_index * per_round + i) % len(photos)
                    in_process.append(predict_in_process(bundle, photos[index]))
                    cpu = cpu_seconds(pid)
                    single.append(client.post(uploads[index]))
                    single_cpu += cpu_seconds(pid) - cpu
                cpu = cpu_seconds(pid)
                latencies, wall = run_clients(
                    port, uploads, clients, max(1, 2 * per_round // clients)
                )
                loaded_cpu += cpu_seconds(pid) - cpu
                loaded += latencies
                loaded_wall += wall
                round_single_s = sum(single[-per_round:]) / 1000
                round_speedups.append((len(latencies) / wall) / (per_round / round_single_s))
        decode_ms = phone_photo_decode_ms(photos[0])
        half = max(1, clients // 2)
        forward = {
            "batch_1": forward_images_per_second(bundle.model, 1, repeats=8),
            f"batch_{clients}": forward_images_per_second(bundle.model, clients),
            f"2_passes_of_{half}": forward_images_per_second(bundle.model, half, passes=2),
        }
    single_rps = len(single) / (sum(single) / 1000)
    loaded_rps = len(loaded) / loaded_wall
    ratio = percentile(single, 50) / percentile(in_process, 50)
    speedup = loaded_rps / single_rps
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "model": {
            "architecture": "resnet34",
            "image_size": IMAGE_SIZE,
            "classes": class_names,
            "precision": models.precision_of(bundle.model),
        },
        "photos": {"folder": "../shared/datasets/indonesian-snacks", "count": len(photos)},
        "in_process_ms": summary(in_process),
        "http_single_client_ms": summary(single),
        "http_concurrent_ms": summary(loaded),
        "throughput_rps": {
            "single_client": round(single_rps, 2),
            f"{clients}_clients": round(loaded_rps, 2),
        },
        "ratio_p50_http_over_in_process": round(ratio, 3),
        "throughput_speedup": round(speedup, 3),
        # Each round's clients measured back to back: the spread shows the machine's noise.
        "throughput_speedup_per_round": [round(value, 2) for value in round_speedups],
        # CPU the API process spent per request, and how many cores it kept busy under load:
        # batching shows as fewer CPU-ms per request; a saturated share of the machine as
        # utilisation near the cores it could get.
        "api_cpu_ms_per_request": {
            "single_client": round(single_cpu / len(single) * 1000, 1),
            f"{clients}_clients": round(loaded_cpu / len(loaded) * 1000, 1),
        },
        "api_cores_busy_under_load": round(loaded_cpu / loaded_wall, 2),
        "api_cores_busy_single_client": round(single_cpu / (sum(single) / 1000), 2),
        "forward_images_per_s": {name: round(value, 1) for name, value in forward.items()},
        "phone_photo_decode_cpu_ms": decode_ms,
        "predict_runners": Settings().predict_runners,
        "targets": {
            f"ratio <= {TARGET_RATIO}": ratio <= TARGET_RATIO,
            f"speedup >= {TARGET_SPEEDUP}": speedup >= TARGET_SPEEDUP,
        },
    }


def markdown(results: dict[str, Any], clients: int) -> str:
    a, b = results["in_process_ms"], results["http_single_client_ms"]
    c, rps = results["http_concurrent_ms"], results["throughput_rps"]
    machine, cpu = results["machine"], results["api_cpu_ms_per_request"]
    fwd = results["forward_images_per_s"]
    per_round = results["throughput_speedup_per_round"]
    decode = results["phone_photo_decode_cpu_ms"]
    half = max(1, clients // 2)
    met = {name: "met" if ok else "missed" for name, ok in results["targets"].items()}
    lines = [
        f"# POST /predict latency (ResNet-34, 224x224, CPU, {results['model']['precision']})",
        "",
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs "
        f"(torch {machine['torch']}, {machine['torch_threads']} threads, "
        f"OMP_WAIT_POLICY={machine['omp_wait_policy']}, "
        f"load average {machine['load_average_1m']}), "
        f"{results['photos']['count']} JPEG photos of indonesian-snacks.",
        "",
        "| measurement | p50 ms | p99 ms | mean ms | n |",
        "|---|---:|---:|---:|---:|",
        f"| (a) in-process decode + preprocess + forward | {a['p50']} | {a['p99']} "
        f"| {a['mean']} | {a['n']} |",
        f"| (b) POST /predict, 1 client | {b['p50']} | {b['p99']} | {b['mean']} | {b['n']} |",
        f"| (c) POST /predict, {clients} clients | {c['p50']} | {c['p99']} | {c['mean']} "
        f"| {c['n']} |",
        "",
        "| target | value | |",
        "|---|---:|---|",
        f"| p50(b) / p50(a) <= {TARGET_RATIO} | {results['ratio_p50_http_over_in_process']} "
        f"| {met[f'ratio <= {TARGET_RATIO}']} |",
        f"| throughput {clients} clients / 1 client >= {TARGET_SPEEDUP} "
        f"({rps[f'{clients}_clients']} / {rps['single_client']} req/s) "
        f"| {results['throughput_speedup']} | {met[f'speedup >= {TARGET_SPEEDUP}']} |",
        "",
        f"Throughput speed-up of each of the {len(per_round)} interleaved rounds: "
        f"{', '.join(str(value) for value in per_round)} "
        f"(median {statistics.median(per_round):.2f}).",
        "",
        f"The API process spent {cpu['single_client']} CPU-ms per request with one client, "
        f"keeping {results['api_cores_busy_single_client']} of {machine['cpus']} cores busy, and "
        f"{cpu[f'{clients}_clients']} with {clients} clients, keeping "
        f"{results['api_cores_busy_under_load']} busy ({results['predict_runners']} runners).",
        "",
        f"Bare forward passes, images/s: {fwd['batch_1']} one at a time, "
        f"{fwd[f'batch_{clients}']} in batches of {clients}, {fwd[f'2_passes_of_{half}']} "
        f"with two passes of {half} at once.",
        "",
        f"A 12-megapixel JPEG takes {decode['full']} CPU-ms to decode in full and crop, "
        f"{decode['reduced']} at the reduced JPEG scale the API decodes at.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if "OMP_WAIT_POLICY" not in os.environ:
        # libgomp busy-waits between parallel regions by default; on a machine shared with
        # other processes that made two-thread forwards up to 10x slower at random (in this
        # process and the API alike). It reads the variable when torch loads, so restart with
        # it set; the API subprocess inherits it.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "bench.predict_latency", *sys.argv[1:]])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=180, help="single-client requests")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved measurement rounds")
    parser.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="served precision (FOODLAB_PREDICT_PRECISION); auto: bf16 on CPUs that have it",
    )
    args = parser.parse_args()
    results = run(args.requests, args.clients, args.rounds, args.precision)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "predict_latency" if args.precision == "auto" else f"predict_latency-{args.precision}"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(results, args.clients))
    print(markdown(results, args.clients))


if __name__ == "__main__":
    main()
