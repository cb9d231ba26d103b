"""Fault injection at every step of a job's life, with real `foodlab worker` processes on
PostgreSQL and Redis. Timing comes from pause points (core.faults), not sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import torch
from fastapi.testclient import TestClient
from sqlalchemy import update

from core import repository as repo
from core.db import session_scope
from core.settings import Settings
from core.storage import job_dir, sha256_of
from core.tables import Job, utcnow
from tests.service.faults_testlib import FoodlabWorker, TcpProxy, submit_job, tiny_archive
from tests.support import client_for, make_settings, wait_until

pytestmark = pytest.mark.integration

TIMEOUT = 180.0
FINISHED = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def production(tmp_path: Path, migrated_postgres_url: str, redis_url: str) -> Settings:
    return make_settings(
        tmp_path / "home",
        database_url=migrated_postgres_url,
        broker_url=redis_url,
        heartbeat_seconds=0.5,
        stale_after_seconds=3.0,
        resend_after_seconds=2.0,
        database_wait_seconds=60.0,
    )


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return tiny_archive(tmp_path)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., FoodlabWorker]]:
    started: list[FoodlabWorker] = []

    def start(settings: Settings, **options: object) -> FoodlabWorker:
        worker = FoodlabWorker(settings, tmp_path / f"worker-{len(started)}.log", **options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def job_of(client: TestClient, job_id: int) -> dict:
    return client.get(f"/jobs/{job_id}").json()


def wait_finished(client: TestClient, job_id: int, *logs: FoodlabWorker) -> dict:
    return wait_until(
        lambda: (job := job_of(client, job_id))["status"] in FINISHED and job,
        TIMEOUT,
        f"job {job_id} to finish",
        [w.log for w in logs],
    )


def wait_stopped(worker: FoodlabWorker, point: str) -> None:
    wait_until(lambda: worker.stopped, TIMEOUT, f"the worker to pause at {point}", [worker.log])


def epochs_of(client: TestClient, job_id: int) -> list[int]:
    return [row["epoch"] for row in client.get(f"/jobs/{job_id}/metrics").json()["data"]]


def assert_files_match_rows(client: TestClient, settings: Settings, job_id: int) -> None:
    """Every checkpoint row names its file's epoch and SHA-256; bundle.pt holds best.pt's
    weights, and best.pt is the best epoch's checkpoint."""
    job = job_of(client, job_id)
    rows = {row["kind"]: row for row in client.get(f"/jobs/{job_id}/checkpoints").json()}
    assert set(rows) == {"last", "best", "bundle"}
    for row in rows.values():
        path = settings.home / row["path"]  # the API names files relative to FOODLAB_HOME
        assert sha256_of(path) == row["sha256"] and path.stat().st_size == row["size_bytes"]
    folder = job_dir(settings.checkpoints_dir, job_id)
    last = torch.load(folder / "last.pt", weights_only=True)
    best = torch.load(folder / "best.pt", weights_only=True)
    bundle = torch.load(folder / "bundle.pt", weights_only=True)
    metrics = last["metrics"]
    best_epoch = max(metrics, key=lambda m: (m["val_accuracy"], -m["val_loss"], -m["epoch"]))
    assert rows["last"]["epoch"] == last["epoch"] == len(metrics)
    assert job["best"]["epoch"] == rows["best"]["epoch"] == best["epoch"] == best_epoch["epoch"]
    assert rows["bundle"]["epoch"] == bundle["metadata"]["best_epoch"] == best["epoch"]
    assert bundle["state_dict"].keys() == best["model"].keys()
    for name, tensor in best["model"].items():
        assert torch.equal(bundle["state_dict"][name], tensor), name
    served = [model["job_id"] for model in client.get("/models").json()["data"]]
    assert job_id in served


# Each point of the checkpoint sequence once; two kills in one job where they are in
# different phases (the epoch's files, then the bundle), to start fewer jobs.
CHECKPOINT_KILLS = [
    ("last_saved@1", "bundle_saved"),
    ("last_recorded@1", "bundle_recorded"),
    ("best_saved@1",),
    ("best_recorded@1",),
    ("epoch_recorded@1",),
]


def resume_here(settings: Settings, job_id: int) -> None:
    """What the next worker does once the dead one's heartbeat is stale, in this process
    (saves starting a second worker; `test_job_runs_*` cover the process side). The heartbeat
    is aged past `stale_after` instead of waited out: the worker that wrote it is gone, and
    the reaper's clock is `test_job_lifecycle.py`'s (and the tests below wait it out)."""
    from workers.jobs import requeue_stale_jobs, run_job

    with session_scope(settings.database) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=settings.stale_after_seconds + 1))
        )
    assert requeue_stale_jobs(settings)
    run_job(settings, job_id, device="cpu")


@pytest.mark.parametrize("points", CHECKPOINT_KILLS, ids="+".join)
def test_a_kill_at_any_checkpoint_step_serves_the_best_epoch(
    points: tuple[str, ...],
    production: Settings,
    archive: Path,
    workers: Callable[..., FoodlabWorker],
) -> None:
    """Epoch 1 is always the best so far, so each @1 point is in the middle of a new best."""
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=2)
        for point in points:  # each worker resumes what the one before left, then is killed
            worker = workers(production, pause_at=point)
            wait_stopped(worker, point)
            worker.kill()
        partial = job_dir(production.checkpoints_dir, job_id) / ".last.pt.interrupted.tmp"
        partial.write_bytes(b"half a checkpoint")  # as a kill during a write leaves it
        resume_here(production, job_id)
        job = job_of(client, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempts"] == len(points) + 1
        assert epochs_of(client, job_id) == [1, 2]
        assert_files_match_rows(client, production, job_id)
        assert not partial.exists()


def test_a_paused_worker_that_lost_its_claim_writes_nothing(
    production: Settings, archive: Path, workers: Callable[..., FoodlabWorker]
) -> None:
    # Long enough that the first worker's reaper, running again, does not take the job from
    # the paused second one while the test looks.
    production = production.model_copy(update={"stale_after_seconds": 6.0})
    first = workers(production, pause_at="batch@2")
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=3)
        wait_stopped(first, "batch@2")  # SIGSTOP mid-epoch 2: heartbeats stop
        # The second pauses as soon as it holds the job, so that nothing changes while the
        # first runs again.
        second = workers(production, pause_at="batch@2")
        wait_stopped(second, "batch@2 of the second worker")
        assert job_of(client, job_id)["worker"].endswith(f":{second.pid}")
        before = snapshot(client, production, job_id)
        first.signal(signal.SIGCONT)
        wait_until(
            lambda: "was taken over by another worker" in first.output(),
            TIMEOUT,
            "the first worker to notice",
            [first.log],
        )
        wait_until(
            lambda: "Task foodlab.train" in first.output().split("taken over")[-1],
            TIMEOUT,
            "the first worker's task to end",
            [first.log],
        )
        assert snapshot(client, production, job_id) == before
        first.kill()
        second.signal(signal.SIGCONT)
        job = wait_finished(client, job_id, first, second)
        assert job["status"] == "succeeded", job["error"]
        assert job["worker"].endswith(f":{second.pid}") and job["attempts"] == 2
        assert epochs_of(client, job_id) == [1, 2, 3]
        assert_files_match_rows(client, production, job_id)


def snapshot(client: TestClient, settings: Settings, job_id: int) -> tuple:
    """What a writer could change: the job row, its metrics and checkpoint rows, its files."""
    job = job_of(client, job_id)
    job.pop("heartbeat_at")
    folder = job_dir(settings.checkpoints_dir, job_id)
    files = sorted(
        (path.name, path.stat().st_mtime_ns, sha256_of(path)) for path in folder.iterdir()
    )
    return (
        job,
        client.get(f"/jobs/{job_id}/metrics").json(),
        client.get(f"/jobs/{job_id}/checkpoints").json(),
        files,
    )


def test_queued_jobs_whose_messages_were_lost_are_sent_again(
    production: Settings, archive: Path, workers: Callable[..., FoodlabWorker]
) -> None:
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=1)
        # A Redis restart without persistence: every queued message is gone.
        redis.Redis.from_url(production.broker_url).flushdb()
        worker = workers(production)
        job = wait_finished(client, job_id, worker)
        assert job["status"] == "succeeded", job["error"]
        assert "sent queued jobs again" in worker.output()


def test_post_jobs_with_the_broker_down_answers_503_and_creates_nothing(
    tmp_path: Path, production: Settings, archive: Path
) -> None:
    proxy = TcpProxy(("127.0.0.1", 6379))
    db_number = production.broker_url.rsplit("/", 1)[1]
    settings = production.model_copy(
        update={"broker_url": proxy.url(f"redis://127.0.0.1:{{port}}/{db_number}")}
    )
    try:
        with client_for(settings) as client:
            proxy.cut()
            dataset = client.post("/datasets", files={"file": ("d.zip", archive.read_bytes())})
            body = {
                "dataset_id": dataset.json()["id"],
                "architecture": {"name": "resnet34"},
                "hyperparameters": {"epochs": 1, "image_size": 32},
            }
            refused = client.post("/jobs", json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["field"] == "broker"
            assert "no job was created" in refused.json()["detail"]
            assert client.get("/jobs").json()["count"] == 0
            proxy.restore()
            assert client.post("/jobs", json=body).status_code == 201
    finally:
        proxy.close()


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(
    production: Settings, archive: Path, workers: Callable[..., FoodlabWorker]
) -> None:
    """A prefork pool (the child dies, the main process lives on and reaps) on PostgreSQL:
    children forked after the main process used the database must not share its
    connections."""
    settings = production.model_copy(update={"max_attempts": 2})
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.tasks",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "-Q",
        "cpu",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    worker = workers(settings, command=command, FOODLAB_TEST_KILL_AT="batch@1")
    with client_for(settings) as client:
        job_id = submit_job(client, archive, epochs=1)
        job = wait_finished(client, job_id, worker)
        assert job["status"] == "failed"
        message = job["error"]["message"]
        assert message.startswith("the worker died 2 times while running this job"), message
        assert "stopped heart-beating before its first progress report" in message
        assert "OperationalError" not in worker.output()


def test_a_warm_shutdown_hands_the_job_back_at_the_next_batch(
    production: Settings, archive: Path, workers: Callable[..., FoodlabWorker]
) -> None:
    worker = workers(production, pause_at="batch@2")
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=2)
        wait_stopped(worker, "batch@2")
        worker.signal(signal.SIGTERM)  # handled once it runs again: stop, hand back
        worker.signal(signal.SIGCONT)
        assert worker.process.wait(timeout=TIMEOUT) == 0
        job = job_of(client, job_id)
        assert job["status"] == "queued" and job["attempts"] == 0 and job["error"] is None
        assert epochs_of(client, job_id) == [1]
        run_job_here(production, job_id)
        job = job_of(client, job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 1
        assert epochs_of(client, job_id) == [1, 2]


def run_job_here(settings: Settings, job_id: int) -> None:
    from workers.jobs import run_job

    run_job(settings, job_id, device="cpu")


def test_a_cold_shutdown_leaves_the_job_resumable(
    production: Settings, archive: Path, workers: Callable[..., FoodlabWorker]
) -> None:
    worker = workers(production, pause_at="batch@2")
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=2)
        wait_stopped(worker, "batch@2")
        worker.signal(signal.SIGQUIT)  # Celery's cold shutdown: it raises into the task
        worker.signal(signal.SIGCONT)
        worker.process.wait(timeout=TIMEOUT)
        job = job_of(client, job_id)
        assert job["status"] in ("queued", "running") and job["error"] is None, job
        assert "job failed" not in worker.output()  # no NotImplementedError ... kill_job
        assert "handed back to the queue: the worker shut down (cold)" in worker.output()
        if job["status"] == "running":
            resume_here(production, job_id)
        else:
            run_job_here(production, job_id)
        job = job_of(client, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert epochs_of(client, job_id) == [1, 2]


def test_a_dead_data_loader_process_is_retried_like_a_lost_worker(
    tmp_path: Path, production: Settings, workers: Callable[..., FoodlabWorker]
) -> None:
    # Enough batches that the DataLoader process still has work when it is killed.
    archive = tiny_archive(tmp_path, per_class=12)
    worker = workers(production, pause_at="batch@1")
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=1, num_workers=1)
        wait_stopped(worker, "batch@1")
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert children, "the DataLoader should have a worker process"
        for child in children:
            os.kill(int(child), signal.SIGKILL)
        worker.signal(signal.SIGCONT)
        job = wait_finished(client, job_id, worker)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempts"] == 2  # the lost attempt counts against FOODLAB_MAX_ATTEMPTS
        assert "DataLoader worker" in worker.output()


def test_cancelling_a_job_whose_worker_just_died_ends_it_and_delete_works(
    production: Settings, archive: Path, workers: Callable[..., FoodlabWorker]
) -> None:
    from workers.jobs import requeue_stale_jobs

    worker = workers(production, pause_at="batch@1")
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=1)
        wait_stopped(worker, "batch@1")
        worker.kill()
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
        # The reaper of whichever worker runs next finds the dead worker's job.
        wait_until(
            lambda: (
                job_of(client, job_id)["status"] == "cancelled" or requeue_stale_jobs(production)
            ),
            TIMEOUT,
            "the cancel to settle",
        )
        assert job_of(client, job_id)["status"] == "cancelled"
        assert client.delete(f"/jobs/{job_id}").status_code == 204


def test_a_failed_or_cancelled_job_is_retried_from_its_last_checkpoint(
    production: Settings, archive: Path, workers: Callable[..., FoodlabWorker]
) -> None:
    worker = workers(production, pause_at="batch@2")
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=3)
        wait_stopped(worker, "batch@2")
        cancelling = client.post(f"/jobs/{job_id}/cancel").json()
        assert cancelling["cancel_requested"] and cancelling["status"] == "running", cancelling
        worker.signal(signal.SIGCONT)  # sees the cancel within a second: in epoch 2 or 3
        assert wait_finished(client, job_id, worker)["status"] == "cancelled"
        done = epochs_of(client, job_id)
        assert done in ([1], [1, 2])
        assert client.post(f"/jobs/{job_id}/retry").json()["status"] == "queued"
        job = wait_finished(client, job_id, worker)
        assert job["status"] == "succeeded", job["error"]
        assert epochs_of(client, job_id) == [1, 2, 3]
        with session_scope(production.database) as session:
            start = repo.get_job(session=session, job_id=job_id).run_info["start_epoch"]
        assert start == len(done) + 1  # resumed, not restarted
        assert client.post(f"/jobs/{job_id}/retry").status_code == 409


def test_the_api_answers_503_while_postgres_is_down_and_recovers(
    tmp_path: Path, production: Settings
) -> None:
    proxy = TcpProxy(("127.0.0.1", 5432))
    url = production.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = production.model_copy(update={"database_url": url})
    try:
        with client_for(settings) as client:
            assert client.get("/jobs").status_code == 200
            proxy.cut()
            down = client.get("/jobs")
            assert down.status_code == 503, down.text
            assert down.json()["field"] == "database"
            assert "database is unreachable" in down.json()["detail"]
            proxy.restore()
            assert client.get("/jobs").status_code == 200
    finally:
        proxy.close()


def test_a_worker_waits_out_a_database_outage_mid_job(
    production: Settings, archive: Path, workers: Callable[..., FoodlabWorker]
) -> None:
    proxy = TcpProxy(("127.0.0.1", 5432))
    url = production.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    through_proxy = production.model_copy(update={"database_url": url})
    try:
        worker = workers(through_proxy, pause_at="batch@1")
        with client_for(production) as client:
            job_id = submit_job(client, archive, epochs=2)
            wait_stopped(worker, "batch@1")
            proxy.cut()  # the database goes away mid-epoch 1
            worker.signal(signal.SIGCONT)
            wait_until(
                lambda: "database unreachable while" in worker.output(),
                TIMEOUT,
                "the worker to meet the outage",
                [worker.log],
            )
            proxy.restore()
            job = wait_finished(client, job_id, worker)
            assert job["status"] == "succeeded", job["error"]
            assert job["attempts"] == 1
            assert epochs_of(client, job_id) == [1, 2]
    finally:
        proxy.close()


@pytest.fixture
def small_disk(production: Settings) -> Iterator[Path]:
    """The checkpoints folder on an 8 MiB tmpfs: smaller than one ResNet-34 checkpoint."""
    folder = production.checkpoints_dir
    folder.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_fails_the_job_saying_so(
    production: Settings, archive: Path, small_disk: Path
) -> None:
    with client_for(production) as client:
        job_id = submit_job(client, archive, epochs=1)
        run_job_here(production, job_id)
        job = job_of(client, job_id)
        assert job["status"] == "failed"
        assert "No space left on device" in job["error"]["message"], job["error"]
        leftovers = list(job_dir(small_disk, job_id).iterdir())
        assert leftovers == [], leftovers  # the partial temporary file was removed
