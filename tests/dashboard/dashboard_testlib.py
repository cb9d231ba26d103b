"""A real `foodlab up` on a loopback port and a real headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request

from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; never a downloaded browser
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
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
VIEWPORT = {"width": 1366, "height": 768}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`foodlab up` (API and one worker, embedded SQLite and filesystem broker) in its own
    process group, so stopping it takes the worker too; `command="api"` for the API alone."""

    def __init__(self, home: Path, log: Path, command: str = "up", **env: str) -> None:
        self.command = command
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.log = log
        environment = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FOODLAB_") or k == "FOODLAB_HOME"
        }
        environment.update(
            FOODLAB_HOME=str(home),
            FOODLAB_WORKER_DEVICE="cpu",
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
            **env,
        )
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("foodlab")), command, "--port", str(self.port)],
            cwd=REPO,
            env=environment,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, timeout: float = 90) -> None:
        wait_until(self._ready, timeout, f"foodlab {self.command} at {self.url}", [self.log])
        if self.command != "up":
            return  # no jobs pages there: the architectures are not needed
        # The first GET /architectures builds every network to count its FLOPs (many seconds
        # on a busy machine); ask now, in the background, as a browser opening the jobs page
        # would, so the new-job form is not waiting for it later.
        threading.Thread(
            target=httpx.get,
            args=(f"{self.url}/architectures",),
            kwargs={"timeout": 180},
            daemon=True,
        ).start()

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"foodlab {self.command} exited:\n{self.log.read_text()[-3000:]}")
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def job(self, job_id: int) -> dict:
        return self.http.get(f"/jobs/{job_id}").raise_for_status().json()

    def wait_for_status(self, job_id: int, statuses: set[str], timeout: float = 90) -> dict:
        what = f"job {job_id} to be {' or '.join(sorted(statuses))}"
        return wait_until(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout,
            what,
            [self.log],
        )


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@dataclass
class Watched:
    """A page plus what it did: console errors, uncaught exceptions, every URL it requested."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def remote_requests(self) -> list[str]:
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in {"data", "blob", "about"}
            and urlsplit(url).hostname not in LOOPBACK
        ]

    def unexpected_errors(self, allowed_statuses: tuple[int, ...] = ()) -> list[str]:
        # Chromium logs every 4xx answer as a console error; a test that provokes one says so.
        allowed = tuple(f"status of {code}" for code in allowed_statuses)
        return [e for e in self.errors if not (allowed and any(a in e for a in allowed))]

    def assert_clean(self, allowed_statuses: tuple[int, ...] = ()) -> None:
        assert self.unexpected_errors(allowed_statuses) == [], "JavaScript console errors"
        assert self.remote_requests() == [], "requests to a non-loopback host"


def watch(page: Page) -> Watched:
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(message.text)

    def on_request(request: Request) -> None:
        watched.requests.append(request.url)

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    page.on("request", on_request)
    return watched
