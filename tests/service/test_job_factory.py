"""One job factory: the same configuration asked for through every entry point is the same
rows and one repeat group; rows stored before in another form are normalised by migration."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, create_engine, insert, select

import models
from analysis.compare import build_comparison, load_records
from analysis.study import StudyPlan
from cli.study_local import LocalBackend
from cli.study_remote import RemoteBackend
from core.db import open_session
from core.migrate import upgrade
from core.settings import Settings, get_settings
from core.tables import Job

# What a job's configuration is; ids, queues, group ids and timestamps may differ.
CONFIGURATION = (
    "dataset_id",
    "architecture",
    "architecture_options",
    "hyperparameters",
    "preset",
    "repeat_index",
)
PLAN = StudyPlan(["se_resnet34"], "reference", {"epochs": 1, "image_size": 32}, repeats=2)


@pytest.fixture
def local(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalBackend]:
    """`foodlab study --local` on the same FOODLAB_HOME as the API under test."""
    monkeypatch.setenv("FOODLAB_HOME", str(settings.home))
    get_settings.cache_clear()
    yield LocalBackend(device="cpu")
    get_settings.cache_clear()


def configuration(job: Job) -> tuple[object, ...]:
    return tuple(getattr(job, name) for name in CONFIGURATION)


def test_every_entry_point_makes_the_same_rows(
    client: TestClient, local: LocalBackend, settings: Settings, synth_folder: Path
) -> None:
    dataset_id = local.register_dataset(synth_folder)
    body = {
        "dataset_id": dataset_id,
        "preset": "reference",
        "repeats": 2,
        "hyperparameters": {"epochs": 1, "image_size": 32},
    }
    made = {
        "study --local": local.submit(dataset_id, "se_resnet34", PLAN),
        "study --url": RemoteBackend(client).submit(dataset_id, "se_resnet34", PLAN),
    }
    for label, options in (("POST /jobs", {}), ("POST /jobs, preset spelled out", {"attn": "se"})):
        architecture = {"name": "se_resnet34", "options": options}
        first = client.post("/jobs", json=body | {"architecture": architecture})
        assert first.status_code == 201, first.text
        group = client.get("/jobs", params={"group_id": first.json()["group_id"]}).json()
        made[label] = sorted(job["id"] for job in group["data"])
    with open_session(settings.database) as session:
        rows = {
            label: [configuration(session.get(Job, i)) for i in ids] for label, ids in made.items()
        }
        expected = rows["POST /jobs"]
        assert all(found == expected for found in rows.values()), rows
        assert expected[0][2] == {}  # the canonical form: only what differs from the preset
        every_id = [job_id for ids in made.values() for job_id in ids]
        records = load_records(session=session, job_ids=every_id)
    groups = build_comparison(records).groups
    assert [sorted(group.job_ids) for group in groups] == [sorted(every_id)]


def test_options_are_stored_as_what_differs_from_the_preset() -> None:
    assert models.canonical_options("se_resnet34", {"attn": "se", "act": "relu"}) == {}
    assert models.canonical_options("se_resnet34", {"attn": "none"}) == {"attn": "none"}
    assert models.canonical_options("resnet34", {"deep_stem": True}) == {"deep_stem": True}


def test_migration_normalises_rows_stored_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0001")
    engine = create_engine(url)
    stored = {
        "se_resnet34": {"attn": "se"},  # what study --local wrote
        "resnet34d": {"deep_stem": True, "avg_down": True, "dropout": 0.2},
        "plain34": {"residual": False, "act": "silu"},
        "resnet34": {},
    }
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        # The tables as revision 0001 made them (today's ORM classes have more columns).
        tables = MetaData()
        tables.reflect(connection)
        dataset = connection.execute(
            insert(tables.tables["datasets"]).values(
                name="d",
                path="/d",
                source="folder",
                fingerprint="f",
                classes=["a", "b"],
                counts={},
                skipped=[],
                num_images=2,
                created_at=now,
            )
        ).inserted_primary_key[0]
        for architecture, options in stored.items():
            connection.execute(
                insert(tables.tables["jobs"]).values(
                    dataset_id=dataset,
                    status="succeeded",
                    architecture=architecture,
                    architecture_options=options,
                    hyperparameters={},
                    queue="cpu",
                    repeat_index=0,
                    created_at=now,
                    attempts=1,
                    cancel_requested=False,
                    progress_epoch=0,
                    progress_batch=0,
                    progress_total_batches=0,
                    progress_percent=0.0,
                    run_info={},
                )
            )
    upgrade(url)
    with engine.connect() as connection:
        found = dict(connection.execute(select(Job.architecture, Job.architecture_options)).all())
    engine.dispose()
    assert found == {
        name: models.canonical_options(name, options) for name, options in stored.items()
    }
    assert found["resnet34d"] == {"dropout": 0.2} and found["plain34"] == {"act": "silu"}
