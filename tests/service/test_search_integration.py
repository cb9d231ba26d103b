"""A search on PostgreSQL + Redis with two real worker processes, one of them killed."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.search import optuna_storage
from core.settings import Settings
from core.tables import EpochMetric, Job
from tests.support import Worker, client_for, make_settings, wait_until

pytestmark = pytest.mark.integration

SEARCH_TIMEOUT = 600.0
TRIALS = 8


def test_search_with_a_hopeless_space_prunes_survives_a_killed_worker_and_finishes(
    tmp_path: Path,
    migrated_postgres_url: str,
    redis_url: str,
    synth_zip: Path,
    start_worker: Callable[[Settings], Worker],
) -> None:
    settings = make_settings(
        tmp_path / "home",
        database_url=migrated_postgres_url,
        broker_url=redis_url,
        heartbeat_seconds=0.5,
        stale_after_seconds=4.0,
    )
    workers = [start_worker(settings), start_worker(settings)]
    logs = lambda: [w.log for w in workers]  # noqa: E731 - read when a wait times out
    with client_for(settings) as client:
        dataset = client.post("/datasets", files={"file": ("d.zip", synth_zip.read_bytes())})
        body = {
            "dataset_id": dataset.json()["id"],
            "architecture": {"name": "resnet34"},
            "preset": "recommended",
            "n_trials": TRIALS,
            "max_parallel": 2,
            # The first half of the trials are TPE's random start-up draws, fixed by the seed:
            # with seed 135 trials 0-2 draw rates that learn nothing in 3 epochs (4.8e-5, 1.9e-6,
            # 2e-4: chance-level loss) and trial 3 draws 8.7, whose epoch-1 loss is thousands of
            # times theirs. Trial 3 starts after two trials have ended, so the median pruner
            # prunes it whatever the numerics of the machine (with seed 0 the hopeless draws
            # came first and set the median: nothing was pruned on an AVX512 CPU).
            "seed": 135,
            "objective": "val_loss",
            "pruner": "median",
            "hyperparameters": {
                "epochs": 3,
                "warmup_epochs": 0,
                "warmup_steps": 0,  # recommended warms up in steps; this test wants none
                "image_size": 32,
                "batch_size": 4,
                "eval_batch_size": 16,
            },
            "space": {"lr": {"low": 1e-6, "high": 10, "log": True}},
        }
        created = client.post("/searches", json=body)
        assert created.status_code == 201, created.text
        search_id = created.json()["id"]

        # kill -9 the worker of a trial in its second epoch; a third worker takes over.
        def trial_in_epoch_two() -> dict | None:
            jobs = client.get("/jobs", params={"group_id": created.json()["group_id"]}).json()
            return next(
                (
                    j
                    for j in jobs["data"]
                    if j["status"] == "running" and j["progress"]["epoch"] >= 2
                ),
                None,
            )

        victim = wait_until(trial_in_epoch_two, SEARCH_TIMEOUT, "a trial in epoch 2", logs())
        pid = int(victim["worker"].rsplit(":", 1)[1])
        killed = next(w for w in workers if w.process.pid == pid)
        killed.kill()
        workers.append(start_worker(settings))

        detail = wait_until(
            lambda: (
                (d := client.get(f"/searches/{search_id}").json())["status"] == "succeeded" and d
            ),
            SEARCH_TIMEOUT,
            "the search to finish",
            logs(),
        )

    trials = detail["trials"]
    assert sorted(t["number"] for t in trials) == list(range(TRIALS))  # no trial sampled twice
    assert len({t["job_id"] for t in trials}) == TRIALS
    states = {t["state"] for t in trials}
    assert states <= {"complete", "pruned", "fail"} and "pruned" in states
    for trial in trials:
        assert (
            trial["job_status"]
            == {"complete": "succeeded", "pruned": "pruned", "fail": trial["job_status"]}[
                trial["state"]
            ]
        )
    complete = [t for t in trials if t["state"] == "complete"]
    assert detail["best_trial"]["value"] == min(t["value"] for t in complete)
    assert detail["best_trial"]["number"] in {t["number"] for t in complete}

    resumed = next(t for t in trials if t["job_id"] == victim["id"])
    study = optuna.load_study(
        study_name=detail["study_name"], storage=optuna_storage(settings.database)
    )
    assert len(study.trials) == TRIALS
    with session_scope(settings.database) as session:
        assert session.get(Job, victim["id"]).attempts == 2
        rows = dict(
            session.execute(
                select(EpochMetric.job_id, func.count()).group_by(EpochMetric.job_id)
            ).all()
        )
        distinct = dict(
            session.execute(
                select(EpochMetric.job_id, func.count(func.distinct(EpochMetric.epoch))).group_by(
                    EpochMetric.job_id
                )
            ).all()
        )
    assert rows == distinct  # no epoch stored twice
    for trial in trials:
        reported = study.trials[trial["number"]].intermediate_values
        assert len(reported) == rows.get(trial["job_id"], 0) == trial["epochs_run"]
        assert all(not math.isnan(v) or trial["state"] != "complete" for v in reported.values())
    assert resumed["epochs_run"] >= 2
