"""The HTTP API on the embedded defaults: datasets, jobs, validation and auth (no worker)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core import repository as repo
from core.db import session_scope
from core.settings import Settings
from core.specs import EpochMetrics
from tests.support import client_for, make_settings, migrated_settings


def upload(client: TestClient, data: bytes, name: str = "dishes.zip", **headers: str):
    return client.post(
        "/datasets", files={"file": (name, data, "application/zip")}, headers=headers
    )


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def dataset_id(client: TestClient, synth_zip: Path) -> int:
    response = upload(client, synth_zip.read_bytes())
    assert response.status_code == 201, response.text
    return response.json()["id"]


def job_body(dataset_id: int, **hyper: object) -> dict[str, object]:
    return {
        "dataset_id": dataset_id,
        "architecture": {"name": "resnet34"},
        "hyperparameters": {"epochs": 2, "image_size": 32, **hyper},
    }


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_reports_an_unreachable_database(tmp_path: Path) -> None:
    broken = make_settings(tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/x")
    with client_for(broken) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("error")


def test_upload_reports_classes_counts_and_split(client: TestClient, synth_zip: Path) -> None:
    response = upload(client, synth_zip.read_bytes())
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/datasets/{body['id']}"
    assert body["classes"] == ["bakso", "gado-gado", "nasi-goreng", "rendang", "sate"]
    assert body["num_images"] == 40 and body["skipped"] == []
    assert body["counts"]["sate"] == {"total": 8, "train": 6, "val": 2}
    assert client.get(f"/datasets/{body['id']}").json() == body
    assert client.get("/datasets").json()["count"] == 1


def test_corrupt_images_are_listed_as_skipped(client: TestClient) -> None:
    good = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(good, format="PNG")
    data = zip_bytes(
        {
            "a/1.png": good.getvalue(),
            "a/2.png": good.getvalue(),
            "b/1.png": good.getvalue(),
            "b/broken.jpg": b"not a jpeg at all",
        }
    )
    body = upload(client, data).json()
    assert body["num_images"] == 3
    assert body["skipped"][0]["file"] == "b/broken.jpg"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"../evil/x.jpg": b"x", "a/1.jpg": b"x"}, "unsafe path"),
        ({"/abs/x.jpg": b"x"}, "unsafe path"),
        ({"only/1.jpg": b"x"}, "at least 2 class folders"),
    ],
)
def test_bad_archives_are_refused(
    client: TestClient, settings: Settings, entries: dict[str, bytes], message: str
) -> None:
    response = upload(client, zip_bytes(entries))
    assert response.status_code == 422
    assert response.json()["field"] == "file"
    assert message in response.json()["detail"]
    assert not (settings.home / "evil").exists() and not (settings.home.parent / "evil").exists()
    assert not any(settings.datasets_dir.iterdir())  # nothing half-registered is left


def test_symlinks_in_archives_are_refused(client: TestClient) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("a/link.jpg")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("b/1.jpg", b"x")
    response = upload(client, buffer.getvalue())
    assert response.status_code == 422 and "link" in response.json()["detail"]


def test_non_zip_upload_is_refused(client: TestClient) -> None:
    response = upload(client, b"plain text, not an archive", name="notes.txt")
    assert response.status_code == 422
    assert "not a readable .zip" in response.json()["detail"]


def test_upload_over_the_limit_is_413(tmp_path: Path, synth_zip: Path) -> None:
    small = migrated_settings(tmp_path, max_upload_bytes=1000)
    with client_for(small) as client:
        response = upload(client, synth_zip.read_bytes())
    assert response.status_code == 413 and response.json()["field"] == "file"


def test_folder_registration_stays_under_the_root(tmp_path: Path, synth_folder: Path) -> None:
    disabled = migrated_settings(tmp_path / "a")
    with client_for(disabled) as client:
        assert client.post("/datasets/register", json={"path": "x"}).status_code == 403
    rooted = migrated_settings(tmp_path / "b", datasets_root=synth_folder.parent)
    with client_for(rooted) as client:
        escape = client.post("/datasets/register", json={"path": "../../etc"})
        assert escape.status_code == 403 and escape.json()["field"] == "path"
        missing = client.post("/datasets/register", json={"path": "nope"})
        assert missing.status_code == 422
        ok = client.post("/datasets/register", json={"path": synth_folder.name})
        assert ok.status_code == 201, ok.text
        assert ok.json()["source"] == "folder" and ok.json()["num_images"] == 40
        again = client.post("/datasets/register", json={"path": synth_folder.name})
        assert again.json()["id"] == ok.json()["id"]  # same files, same dataset


def test_create_job(client: TestClient, dataset_id: int, settings: Settings) -> None:
    response = client.post("/jobs", json=job_body(dataset_id, lr=0.01))
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued" and job["queue"] == "cpu"
    assert job["hyperparameters"]["lr"] == 0.01
    assert job["hyperparameters"]["batch_size"] == 32  # from the reference preset
    assert job["progress"]["total_epochs"] == 2
    # The message is on the embedded broker, waiting for a worker.
    assert any((settings.broker_folder / "queue").iterdir())


def test_options_that_undo_a_preset_are_kept(client: TestClient, dataset_id: int) -> None:
    body = job_body(dataset_id) | {
        "architecture": {"name": "se_resnet34", "options": {"attn": "none", "act": "relu"}}
    }
    job = client.post("/jobs", json=body).json()
    assert job["architecture"] == {"name": "se_resnet34", "options": {"attn": "none"}}


def test_repeats_share_a_group_with_consecutive_seeds(client: TestClient, dataset_id: int) -> None:
    body = job_body(dataset_id, seed=7) | {"repeats": 3}
    first = client.post("/jobs", json=body).json()
    group = client.get("/jobs", params={"group_id": first["group_id"]}).json()
    assert group["count"] == 3
    assert sorted(j["hyperparameters"]["seed"] for j in group["data"]) == [7, 8, 9]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hyperparameters": {"lr": -0.1}}, "hyperparameters.lr"),
        ({"hyperparameters": {"epochs": "many"}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"optimiser": "sgd"}}, "hyperparameters.optimiser"),
        ({"hyperparameters": {"optimizer": "lbfgs"}}, "hyperparameters.optimizer"),
        ({"architecture": {"name": "resnet999"}}, "architecture.name"),
        (
            {"architecture": {"name": "resnet34", "options": {"attn": "magic"}}},
            "architecture.options.attn",
        ),
        ({"preset": "fastest"}, "preset"),
        ({"dataset_id": "one"}, "dataset_id"),
        ({"colour": "blue"}, "colour"),
        (
            {"hyperparameters": {"pretrained_weights": "/no/such/file.pth"}},
            "hyperparameters.pretrained_weights",
        ),
    ],
)
def test_invalid_jobs_get_422_naming_the_field(
    client: TestClient, dataset_id: int, change: dict, field: str
) -> None:
    body = {"dataset_id": dataset_id, "architecture": {"name": "resnet34"}} | change
    response = client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert field.split(".")[-1] in response.json()["detail"]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]


def test_unknown_dataset_or_job_is_404(client: TestClient) -> None:
    response = client.post("/jobs", json=job_body(999))
    assert response.status_code == 404 and response.json()["field"] == "dataset_id"
    for path in ("/jobs/5", "/jobs/5/metrics", "/datasets/5"):
        assert client.get(path).status_code == 404


def test_list_filters_and_pagination(client: TestClient, dataset_id: int) -> None:
    for name in ("resnet34", "plain34", "resnet34"):
        body = job_body(dataset_id) | {"architecture": {"name": name}}
        assert client.post("/jobs", json=body).status_code == 201
    assert client.get("/jobs", params={"architecture": "resnet34"}).json()["count"] == 2
    page = client.get("/jobs", params={"limit": 2, "offset": 2}).json()
    assert page["count"] == 3 and len(page["data"]) == 1
    assert client.get("/jobs", params={"status": "running"}).json()["count"] == 0
    assert client.get("/jobs", params={"status": "exploded"}).status_code == 422


def test_cancel_and_delete(client: TestClient, dataset_id: int, settings: Settings) -> None:
    job = client.post("/jobs", json=job_body(dataset_id)).json()
    assert client.delete(f"/jobs/{job['id']}").status_code == 409  # still queued
    cancelled = client.post(f"/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 409
    folder = settings.checkpoints_dir / f"job-{job['id']}"
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"x")
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert not folder.exists()
    assert client.get(f"/jobs/{job['id']}").status_code == 404


def test_metrics_as_json_and_csv(client: TestClient, dataset_id: int, settings: Settings) -> None:
    job = client.post("/jobs", json=job_body(dataset_id)).json()
    with session_scope(settings.database) as session:
        for epoch in (1, 2, 2):  # the repeated epoch is an overwrite, not a second row
            repo.upsert_metric(
                session=session,
                job_id=job["id"],
                metrics=EpochMetrics(
                    epoch=epoch,
                    train_loss=1.0 / epoch,
                    train_accuracy=0.5,
                    val_loss=1.2,
                    val_accuracy=0.4 + epoch / 10,
                    lr=0.1,
                    epoch_seconds=1.0,
                    train_images_per_second=10.0,
                    generalization_gap=0.1,
                    grad_norms={"stem": 0.5, "stage1": 0.25},
                    is_best=True,
                ),
            )
    rows = client.get(f"/jobs/{job['id']}/metrics").json()
    assert rows["count"] == 2 and rows["data"][1]["val_accuracy"] == pytest.approx(0.6)
    assert [row["is_best"] for row in rows["data"]] == [False, True]
    assert client.get(f"/jobs/{job['id']}").json()["best"]["epoch"] == 2
    csv_text = client.get(f"/jobs/{job['id']}/metrics", params={"format": "csv"}).text
    header, first, second = csv_text.strip().splitlines()
    assert header.startswith("epoch,train_loss") and header.endswith(
        "grad_norm_stage1,grad_norm_stem"
    )
    assert first.startswith("1,1.0,") and second.startswith("2,0.5,")


def test_tokens_guard_mutating_endpoints(tmp_path: Path, synth_zip: Path) -> None:
    guarded = migrated_settings(tmp_path, api_tokens="s3cret,other")
    with client_for(guarded) as client:
        missing = upload(client, synth_zip.read_bytes())
        assert missing.status_code == 401 and missing.json()["field"] == "authorization"
        wrong = upload(client, synth_zip.read_bytes(), authorization="Bearer nope")
        assert wrong.status_code == 401
        ok = upload(client, synth_zip.read_bytes(), authorization="Bearer other")
        assert ok.status_code == 201
        assert client.get("/datasets").status_code == 200  # reading needs no token
        assert client.post("/jobs/1/cancel").status_code == 401


@pytest.mark.slow
def test_architectures_are_listed_with_costs(client: TestClient) -> None:
    body = client.get("/architectures").json()
    by_name = {arch["name"]: arch for arch in body["data"]}
    assert {"plain34", "resnet34", "se_resnet34", "preact_resnet34"} <= set(by_name)
    assert by_name["resnet34"]["parameters"] > by_name["plain34"]["parameters"]
    assert by_name["resnet34"]["gflops"] > 1


def test_zip_bomb_is_refused_by_unpacked_size(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/1.jpg", b"\0" * 5_000_000)  # 5 MB of zeros packs into ~5 KB
        archive.writestr("b/1.jpg", b"x")
    assert len(buffer.getvalue()) < 50_000
    limited = migrated_settings(tmp_path, max_unpacked_bytes=1_000_000)
    with client_for(limited) as client:
        response = upload(client, buffer.getvalue())
    assert response.status_code == 422
    assert "more than 1000000 bytes" in response.json()["detail"]
    assert not any(limited.datasets_dir.iterdir())


def test_delete_dataset(
    client: TestClient, dataset_id: int, settings: Settings, synth_zip: Path
) -> None:
    job = client.post("/jobs", json=job_body(dataset_id)).json()
    refused = client.delete(f"/datasets/{dataset_id}")
    assert refused.status_code == 409 and "job" in refused.json()["detail"]
    other = upload(client, synth_zip.read_bytes()).json()
    folders = set(settings.datasets_dir.iterdir())
    assert client.delete(f"/datasets/{other['id']}").status_code == 204
    assert len(set(settings.datasets_dir.iterdir())) == len(folders) - 1  # its files are gone
    assert client.get(f"/datasets/{other['id']}").status_code == 404
    assert client.get(f"/jobs/{job['id']}").status_code == 200  # nothing else touched
    assert client.delete("/datasets/999").status_code == 404
