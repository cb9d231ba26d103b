"""GPU workers on a host without a GPU: the device layer is faked in the worker processes
(tests/fake_cuda/sitecustomize.py), everything above it is the real code: `foodlab worker`,
Celery, PostgreSQL, Redis, the engine (computing on the CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from core.db import session_scope
from core.migrate import upgrade
from core.settings import Settings, SettingsError, get_settings
from core.specs import TrainSpec
from core.storage import job_dir
from core.tables import Job, WorkerPresence
from tests.service.faults_testlib import FOODLAB, FoodlabWorker, submit_job, tiny_archive
from tests.support import REPO, client_for, make_settings, wait_until
from workers import device as gpu
from workers.jobs import _outcome_of, job_spec

FAKE_CUDA = REPO / "tests" / "fake_cuda"
H200 = {"name": "NVIDIA H200", "capability": [9, 0], "memory_gib": 140, "uuid": "GPU-h200"}
L40S = {"name": "NVIDIA L40S", "capability": [8, 9], "memory_gib": 45, "uuid": "GPU-l40s"}
V100 = {"name": "Tesla V100-SXM2-16GB", "capability": [7, 0], "uuid": "GPU-v100"}
TIMEOUT = 240.0
ILLEGAL_ACCESS = "CUDA error: an illegal memory access was encountered"


def fake_machine(*gpus: dict, driver: str = "13.0") -> dict[str, str]:
    """The environment of a worker process on a pretend machine with these GPUs."""
    return {
        "PYTHONPATH": os.pathsep.join([str(FAKE_CUDA), str(REPO)]),
        "FOODLAB_FAKE_GPUS": json.dumps(list(gpus)),
        "FOODLAB_FAKE_DRIVER_CUDA": driver,
    }


# --- the device setting ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda1", "CUDA"])
def test_a_malformed_worker_device_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FOODLAB_WORKER_DEVICE", value)
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="FOODLAB_WORKER_DEVICE: .*cuda:N"):
        get_settings()
    get_settings.cache_clear()


@pytest.mark.slow  # two `foodlab` processes: about 10 s on the shared machine
def test_foodlab_worker_refuses_a_malformed_device_with_status_2(tmp_path: Path) -> None:
    env = {**os.environ, "FOODLAB_HOME": str(tmp_path)}
    for args in (["--device", "cuda:one"], ["--gpu", "1", "--device", "cuda:1"]):
        result = subprocess.run(
            [str(FOODLAB), "worker", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2, result.stderr
        assert "FOODLAB_WORKER_DEVICE" in result.stderr or "not both" in result.stderr


@pytest.mark.parametrize(
    ("setting", "kind", "queues"),
    [("cpu", "cpu", ["cpu"]), ("cuda", "cuda", ["gpu", "cpu"]), ("cuda:1", "cuda", ["gpu", "cpu"])],
)
def test_a_gpu_worker_consumes_the_gpu_queue_and_stores_a_resumable_spec(
    tmp_path: Path, setting: str, kind: str, queues: list[str]
) -> None:
    settings = make_settings(tmp_path, worker_device=setting)
    assert gpu.worker_device(settings).kind == kind
    assert gpu.worker_queues(settings) == queues
    spec = job_spec("resnet34", {}, {"epochs": 1}, gpu.worker_device(settings).kind)
    # What a checkpoint stores must validate when another worker resumes it.
    assert TrainSpec.model_validate(spec.model_dump()).hyperparameters.device == kind


@pytest.mark.parametrize(
    ("visible", "index", "pinned"),
    [(None, 1, "1"), ("2,3", 1, "3"), ("GPU-a,GPU-b", 0, "GPU-a"), (None, 0, "0")],
)
def test_a_worker_pins_its_gpu_through_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, visible: str | None, index: int, pinned: str
) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CUDA_")}
    if visible is not None:
        environment[gpu.VISIBLE] = visible
    monkeypatch.setattr(os, "environ", environment)  # what pinning sets stays in this test
    gpu.pin_gpu(gpu.WorkerDevice(f"cuda:{index}", "cuda", index))
    assert os.environ[gpu.VISIBLE] == pinned
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # nvidia-smi's numbering
    assert gpu.physical_gpu(0) == pinned  # the job's description names the host's GPU


def test_a_gpu_beyond_the_visible_ones_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {**os.environ, gpu.VISIBLE: "2"})
    with pytest.raises(gpu.DeviceUnusable, match="FOODLAB_WORKER_DEVICE=cuda:1: .*1 GPU"):
        gpu.pin_gpu(gpu.WorkerDevice("cuda:1", "cuda", 1))


@pytest.mark.parametrize(
    ("capability", "architectures", "usable"),
    [
        ((9, 0), ["sm_75", "sm_80", "sm_90"], True),
        ((8, 9), ["sm_75", "sm_80", "sm_86"], True),  # a cubin runs on a newer minor
        ((7, 0), ["sm_75", "sm_80", "sm_90"], False),  # a V100 under CUDA 13 builds
        ((10, 0), ["sm_90", "compute_90"], True),  # PTX is compiled for newer GPUs
        ((10, 0), ["sm_90"], False),
    ],
)
def test_kernels_for_a_compute_capability(
    capability: tuple[int, int], architectures: list[str], usable: bool
) -> None:
    assert gpu.has_kernels_for(capability, architectures) is usable


# --- sticky CUDA errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(ILLEGAL_ACCESS),
        torch.AcceleratorError("CUDA error: device-side assert triggered"),
        RuntimeError("CUDA error: unspecified launch failure (cudaErrorLaunchFailure)"),
    ],
)
def test_an_unrecoverable_cuda_error_hands_the_job_back_and_poisons_the_worker(
    error: BaseException,
) -> None:
    try:  # as the pin-memory thread re-raises it
        raise RuntimeError("Caught an error in pin memory thread") from error
    except RuntimeError as wrapped:
        outcome = _outcome_of(wrapped)
    assert outcome is not None and outcome.status is None and outcome.poisoned
    assert outcome.counts_as_attempt  # bounded: a job that triggers it each time ends failed
    assert "unrecoverable CUDA error" in str(outcome.release)


def test_ordinary_errors_are_not_sticky() -> None:
    assert not gpu.is_sticky_cuda_error(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert not gpu.is_sticky_cuda_error(ValueError(ILLEGAL_ACCESS))
    outcome = _outcome_of(RuntimeError("shapes cannot be multiplied"))
    assert outcome is not None and outcome.status is not None and not outcome.poisoned


# --- real worker processes ------------------------------------------------------------------


@pytest.fixture
def production(tmp_path: Path, postgres_url: str, redis_url: str) -> Settings:
    settings = make_settings(
        tmp_path / "home",
        database_url=postgres_url,
        broker_url=redis_url,
        heartbeat_seconds=0.5,
        stale_after_seconds=120.0,
        resend_after_seconds=2.0,
    )
    upgrade(settings.database)
    return settings


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., FoodlabWorker]]:
    started: list[FoodlabWorker] = []

    def start(settings: Settings, args: list[str], **env: str) -> FoodlabWorker:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = FoodlabWorker(settings, log, command=[str(FOODLAB), "worker", *args], **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def presence(settings: Settings) -> dict[str, list[str]]:
    with session_scope(settings.database) as session:
        rows = session.scalars(select(WorkerPresence)).all()
        return {row.name: list(row.queues) for row in rows}


def job_row(settings: Settings, job_id: int) -> Job:
    with session_scope(settings.database) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


@pytest.mark.integration
@pytest.mark.slow
def test_two_gpu_workers_each_consume_the_gpu_queue_and_train_on_their_own_gpu(
    production: Settings, workers: Callable[..., FoodlabWorker], tmp_path: Path
) -> None:
    machine = fake_machine(H200, L40S)
    # Each pauses itself once, in its first job's second epoch: the other job must then go to
    # the other worker (prefetch 1), so each worker runs exactly one.
    pause = {"pause_at": "batch@2"}
    by_flag = workers(production, ["--gpu", "1"], **machine, **pause)
    by_setting = workers(production, [], FOODLAB_WORKER_DEVICE="cuda:0", **machine, **pause)
    logs = [by_flag.log, by_setting.log]
    names = wait_until(
        lambda: len(seen := presence(production)) == 2 and seen, TIMEOUT, "both workers", logs
    )
    assert sorted(names.values()) == [["cpu", "gpu"], ["cpu", "gpu"]]

    archive = tiny_archive(tmp_path)
    with client_for(production) as client:
        first = submit_job(client, archive, epochs=2, device="cuda")
        first_worker = wait_until(
            lambda: next((w for w in (by_flag, by_setting) if w.stopped), None),
            TIMEOUT,
            "the first job's worker to pause",
            logs,
        )
        second = submit_job(client, archive, epochs=2, device="cuda")
        second_worker = by_setting if first_worker is by_flag else by_flag
        wait_until(lambda: second_worker.stopped, TIMEOUT, "the second job's worker", logs)
        for worker in (first_worker, second_worker):
            os.kill(worker.pid, signal.SIGCONT)
        for job_id in (first, second):
            wait_until(
                lambda j=job_id: job_row(production, j).status.value == "succeeded",
                TIMEOUT,
                f"job {job_id} to succeed",
                logs,
            )
    expected = {by_flag.pid: (1, L40S), by_setting.pid: (0, H200)}
    for job_id, worker in ((first, first_worker), (second, second_worker)):
        index, card = expected[worker.pid]
        job = job_row(production, job_id)
        assert job.device == f"cuda:{index} {card['name'].removeprefix('NVIDIA ')} (bf16)"
        info = job.run_details
        assert (info.gpu_index, info.gpu_name, info.gpu_uuid) == (index, card["name"], card["uuid"])
        assert info.worker_device == f"cuda:{index}"
        last = job_dir(production.checkpoints_dir, job_id) / "last.pt"
        checkpoint = torch.load(last, weights_only=False)
        assert TrainSpec.model_validate(checkpoint["spec"]).hyperparameters.device == "cuda"
    startup = by_flag.output()
    assert f"torch {torch.__version__}, CUDA {torch.version.cuda}" in startup
    assert "NVIDIA driver" in startup
    assert "worker device: cuda:1, GPU 1: NVIDIA L40S, compute capability 8.9" in startup


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "machine", "says"),
    [
        (["--gpu", "1"], fake_machine(H200, V100), "compute capability 7.0; this torch build"),
        (["--gpu", "2"], fake_machine(H200, L40S), "GPU 2 does not exist: this machine has 2"),
        (["--gpu", "0"], fake_machine(H200, driver="12.4"), "the NVIDIA driver supports CUDA 12.4"),
    ],
    ids=["too-old-gpu", "no-such-gpu", "old-driver"],
)
def test_a_worker_told_to_use_an_unusable_gpu_refuses_to_start(
    tmp_path: Path,
    workers: Callable[..., FoodlabWorker],
    args: list[str],
    machine: dict[str, str],
    says: str,
) -> None:
    settings = make_settings(tmp_path / "home")
    worker = workers(settings, args, **machine)
    assert worker.process.wait(timeout=TIMEOUT) == 78, worker.output()
    output = worker.output()
    assert f"refusing to start: FOODLAB_WORKER_DEVICE=cuda:{args[1]}: " in output
    assert says in output
    assert "Traceback" not in output


@pytest.mark.integration
@pytest.mark.slow
def test_a_sticky_cuda_error_ends_the_worker_and_another_finishes_the_job(
    production: Settings, workers: Callable[..., FoodlabWorker], tmp_path: Path
) -> None:
    machine = fake_machine(H200)
    poisoned = workers(
        production, ["--gpu", "0"], FOODLAB_TEST_RAISE_AT=f"batch@2:{ILLEGAL_ACCESS}", **machine
    )
    with client_for(production) as client:
        job_id = submit_job(client, tiny_archive(tmp_path), epochs=2)
        assert poisoned.process.wait(timeout=TIMEOUT) == 75, poisoned.output()
        handed_back = job_row(production, job_id)
        assert handed_back.status.value == "queued" and handed_back.attempts == 1
        assert ILLEGAL_ACCESS in str(handed_back.last_failure)
        assert "Traceback" not in poisoned.output().split("unrecoverable CUDA error")[-1]
        fresh = workers(production, ["--gpu", "0"], **machine)
        wait_until(
            lambda: job_row(production, job_id).status.value == "succeeded",
            TIMEOUT,
            "the second worker to finish the job",
            [poisoned.log, fresh.log],
        )
        job = client.get(f"/jobs/{job_id}").json()
        epochs = [row["epoch"] for row in client.get(f"/jobs/{job_id}/metrics").json()["data"]]
    assert job["error"] is None and job["attempts"] == 2
    assert epochs == [1, 2]  # epoch 1 from the poisoned worker's checkpoint, 2 redone
    assert poisoned.pid not in {int(name.rsplit(":", 1)[1]) for name in presence(production)}
