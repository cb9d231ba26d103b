"""Peak memory and disk of the API process for the worst single requests its limits allow.

One API process (uvicorn, embedded defaults, the default limits except an upload limit of
--upload-mb), one random-init ResNet-34 bundle serving at 224 px. For each request the peak
RSS of the API process (VmHWM, reset before each request through /proc/PID/clear_refs) and
the bytes written under FOODLAB_HOME while it ran (sampled every few ms) are recorded:

  predict, worst accepted:  PNGs that decode to the whole per-request pixel budget
                            (2 x 40 MP + 1 x 20 MP: PNG has no reduced-scale decode)
  predict, refused:         a 400,000 x 1 PNG (side limit), and 32 x 12 MP PNGs (pixel budget)
  upload, chunked:          3 x the upload limit with no Content-Length, token given
  upload, declared:         Content-Length over the limit (refused before reading)
  upload, no token:         the same body without a token (refused before reading)

Targets: every peak RSS < 1.5 GB; disk written <= the upload limit.
Results go to bench/results/hostile_limits.{json,md}.

    .venv/bin/python -m bench.hostile_limits [--upload-mb 64]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.predict_latency import free_port, wait_until_up, write_model
from core.migrate import upgrade
from core.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TOKEN = "bench-token"
RSS_TARGET = 1.5 * 1024**3


def png(width: int, height: int) -> bytes:
    """A flat RGB PNG: a few kB on the wire, width x height x 3 bytes once decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (180, 120, 60)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


@contextmanager
def api_server(home: Path, upload_limit: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **os.environ,
        "FOODLAB_HOME": str(home),
        "FOODLAB_API_TOKENS": TOKEN,
        "FOODLAB_MAX_UPLOAD_BYTES": str(upload_limit),
        "OMP_NUM_THREADS": "2",
    }
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
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def current_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS


def bytes_under(folder: Path) -> int:
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except FileNotFoundError:
                pass  # removed while we looked
    return total


class DiskWatcher:
    """The most bytes present under `folder` beyond `baseline` while a request ran."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.baseline = bytes_under(folder)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, bytes_under(self.folder) - self.baseline)
            time.sleep(0.005)

    def __enter__(self) -> DiskWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, bytes_under(self.folder) - self.baseline)


@dataclass
class Outcome:
    name: str
    status: int
    seconds: float
    peak_rss_bytes: int
    disk_bytes: int
    detail: str


def measure(name: str, pid: int, home: Path, send: Any) -> Outcome:
    reset_peak(pid)
    started = time.perf_counter()
    with DiskWatcher(home) as disk:
        try:
            response = send()
            status = response.status_code
            detail = response.text[:160] if status >= 400 else "ok"
        except httpx.TransportError as exc:  # the server answered and closed mid-upload
            status, detail = 0, f"connection closed while sending: {type(exc).__name__}"
    seconds = time.perf_counter() - started
    outcome = Outcome(name, status, round(seconds, 2), peak_rss(pid), disk.peak, detail)
    print(
        f"{name}: {outcome.status} in {seconds:.1f}s, peak RSS "
        f"{outcome.peak_rss_bytes / 2**20:.0f} MiB, disk {outcome.disk_bytes} B"
    )
    return outcome


def chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    """A multipart body streamed without Content-Length (chunked transfer encoding)."""
    boundary = "benchboundary"
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.zip"\r\nContent-Type: application/zip\r\n\r\n'
    ).encode()
    sent = 0
    block = b"\0" * size
    while sent < total:
        yield block
        sent += size
    yield f"\r\n--{boundary}--\r\n".encode()


def run(upload_mb: int) -> dict[str, Any]:
    upload_limit = upload_mb * 1024 * 1024
    settings_fields = Settings.model_fields
    with tempfile.TemporaryDirectory(prefix="foodlab-hostile-") as tmp:
        home = Path(tmp) / "home"
        settings = Settings(home=home)
        upgrade(settings.database)
        write_model(settings, ["a", "b", "c"])
        budget = settings.max_request_pixels
        side = int((settings.max_image_pixels) ** 0.5)  # 6324: a square at the pixel limit
        accepted = [
            ("a.png", png(side, side)),
            ("b.png", png(side, side)),
            ("c.png", png(4472, 4472)),
        ]
        assert sum(Image.open(io.BytesIO(d)).width ** 2 for _, d in accepted) <= budget
        many = [(f"{i}.png", png(4000, 3000)) for i in range(32)]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with api_server(home, upload_limit) as (url, pid):
            client = httpx.Client(base_url=url, timeout=300)
            idle_rss = current_rss(pid)
            client.post("/predict", files=[("file", ("warm.png", png(64, 64)))])  # load model
            loaded_rss = current_rss(pid)

            def predict(files: list[tuple[str, bytes]]) -> Any:
                return lambda: client.post(
                    "/predict", files=[("file", (name, data, "image/png")) for name, data in files]
                )

            def upload(body: Any, headers: dict[str, str]) -> Any:
                content_type = {"Content-Type": "multipart/form-data; boundary=benchboundary"}
                return lambda: client.post(
                    "/datasets", content=body, headers=content_type | headers
                )

            outcomes = [
                measure(
                    "predict: 2 x 40 MP + 1 x 20 MP PNG (the pixel budget)",
                    pid,
                    home,
                    predict(accepted),
                ),
                measure(
                    "predict: 400,000 x 1 PNG", pid, home, predict([("long.png", png(400_000, 1))])
                ),
                measure("predict: 32 x 12 MP PNG", pid, home, predict(many)),
                measure(
                    f"upload: {3 * upload_mb} MB chunked, token",
                    pid,
                    home,
                    upload(chunks(3 * upload_limit), auth),
                ),
                measure(
                    f"upload: Content-Length {3 * upload_mb} MB, token",
                    pid,
                    home,
                    upload(b"\0" * (3 * upload_limit), auth),
                ),
                measure(
                    f"upload: {3 * upload_mb} MB chunked, no token",
                    pid,
                    home,
                    upload(chunks(3 * upload_limit), {}),
                ),
            ]
            client.close()
    return {
        "benchmark": "hostile_limits",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "shared": "yes: other sessions' tests ran on the same 2 cores",
        },
        "limits": {
            name: getattr(settings, name) for name in settings_fields if name.startswith("max_")
        }
        | {"max_upload_bytes": upload_limit},
        "api_rss_bytes": {"idle": idle_rss, "model_loaded": loaded_rss},
        "targets": {"peak_rss_bytes_below": RSS_TARGET, "disk_bytes_at_most": upload_limit},
        "outcomes": [vars(outcome) for outcome in outcomes],
        "met": all(
            o.peak_rss_bytes < RSS_TARGET and o.disk_bytes <= upload_limit for o in outcomes
        ),
    }


def markdown(results: dict[str, Any]) -> str:
    mib = 2**20
    lines = [
        "# Hostile requests: peak memory and disk of the API process",
        "",
        f"{results['date']}, `python -m bench.hostile_limits`; machine shared with other "
        "sessions (2 cores).",
        f"API RSS idle {results['api_rss_bytes']['idle'] / mib:.0f} MiB, with the ResNet-34 "
        f"bundle loaded {results['api_rss_bytes']['model_loaded'] / mib:.0f} MiB. "
        f"Targets: peak RSS < {results['targets']['peak_rss_bytes_below'] / 2**30:.1f} GiB, "
        f"disk <= the upload limit ({results['limits']['max_upload_bytes']} B).",
        "",
        "| request | status | seconds | peak RSS (MiB) | disk written (B) |",
        "|---|---|---|---|---|",
    ]
    for o in results["outcomes"]:
        lines.append(
            f"| {o['name']} | {o['status']} | {o['seconds']} | "
            f"{o['peak_rss_bytes'] / mib:.0f} | {o['disk_bytes']} |"
        )
    lines += ["", f"All targets met: **{'yes' if results['met'] else 'no'}**.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-mb", type=int, default=64)
    args = parser.parse_args()
    results = run(args.upload_mb)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile_limits.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "hostile_limits.md").write_text(markdown(results))
    print(markdown(results))
    if not results["met"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
