"""Fault injection with real processes: `foodlab worker`s paused at named points, and TCP proxies
that cut PostgreSQL or Redis for one test without touching the machine's shared servers."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from fastapi.testclient import TestClient

from core.settings import Settings
from demo.dishes import DISHES, write_dataset_zip
from tests.support import REPO, worker_env

FOODLAB = Path(sys.executable).parent / "foodlab"


class TcpProxy:
    """Forwards a loopback port to `target`; `cut()` drops every connection and refuses new
    ones (as a stopped server does), `restore()` accepts again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, template: str) -> str:
        """`template` with `{port}` replaced by the proxy's port."""
        return template.format(port=self.port)

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        _close(self._server)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._cut.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.discard(a)
                self._open.discard(b)
            _close(a)
            _close(b)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class FoodlabWorker:
    """`foodlab worker` (Celery, solo pool) with test hooks in its environment."""

    def __init__(
        self,
        settings: Settings,
        log: Path,
        pause_at: str | None = None,
        command: list[str] | None = None,
        **env: str,
    ) -> None:
        environment = worker_env(settings)
        environment.pop("FOODLAB_TEST_PAUSE_AT", None)
        if pause_at:
            environment["FOODLAB_TEST_PAUSE_AT"] = pause_at
        environment.update(
            FOODLAB_MAX_ATTEMPTS=str(settings.max_attempts),
            FOODLAB_RESEND_AFTER_SECONDS=str(settings.resend_after_seconds),
            FOODLAB_DATABASE_WAIT_SECONDS=str(settings.database_wait_seconds),
            **env,
        )
        self.log = log
        self.process = subprocess.Popen(
            command or [str(FOODLAB), "worker", "-Q", "cpu"],
            cwd=REPO,
            env=environment,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid

    @property
    def stopped(self) -> bool:
        """Stopped by SIGSTOP (its own, at a pause point)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        if self.alive:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive:
            os.killpg(self.pid, signal.SIGCONT)
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def tiny_archive(folder: Path, per_class: int = 4) -> Path:
    """3 dishes x `per_class` images: a 32x32 epoch of ResNet-34 in about a second."""
    return write_dataset_zip(folder / "tiny.zip", per_class=per_class, size=36, dishes=DISHES[:3])


def submit_job(client: TestClient, archive: Path, epochs: int, **hyper: object) -> int:
    dataset = client.post("/datasets", files={"file": ("d.zip", archive.read_bytes())})
    assert dataset.status_code == 201, dataset.text
    body = {
        "dataset_id": dataset.json()["id"],
        "architecture": {"name": "resnet34"},
        "hyperparameters": {"epochs": epochs, "image_size": 32, "batch_size": 4, **hyper},
    }
    job = client.post("/jobs", json=body)
    assert job.status_code == 201, job.text
    return job.json()["id"]
