"""Hostile uploads and bodies: each answered with a 4xx that names the problem, nothing left
behind on disk, and the token checked before any body is looked at."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.settings import Settings
from tests.service.malformed_zips import MALFORMED, jpeg_bytes
from tests.support import client_for, migrated_settings

EXPECTED_WORDS = {
    "file then folder": "both a file and a folder",
    "entry named .": "without a name",
    "empty name": "without a name",
    "300-character name": "too long",
    "header name differs": "malformed",
    "bad CRC": "Bad CRC",
    "bad offsets": "malformed",
}


def upload(client: TestClient, data: bytes, **headers: str):
    return client.post(
        "/datasets", files={"file": ("d.zip", data, "application/zip")}, headers=headers
    )


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def leftovers(settings: Settings) -> list[Path]:
    """Anything an upload left under FOODLAB_HOME: staging folders or unpacked datasets."""
    staged = list(settings.home.glob(".upload-*"))
    unpacked = list(settings.datasets_dir.iterdir()) if settings.datasets_dir.exists() else []
    return staged + unpacked


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_each_kind_of_malformed_zip_is_a_422_naming_it(
    client: TestClient, settings: Settings, kind: str
) -> None:
    response = upload(client, MALFORMED[kind]())
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "file" and EXPECTED_WORDS[kind] in body["detail"]
    assert str(settings.home) not in body["detail"]  # no server paths in messages
    assert leftovers(settings) == []


def test_a_one_class_zip_says_it_found_one_class(client: TestClient) -> None:
    response = upload(
        client, zip_of({"pizza/1.jpg": jpeg_bytes(8, 8, 1), "pizza/2.jpg": jpeg_bytes(8, 8, 2)})
    )
    assert response.status_code == 422
    assert "found 1 (pizza)" in response.json()["detail"]


def test_a_dataset_without_one_decodable_image_is_refused(
    client: TestClient, settings: Settings
) -> None:
    response = upload(client, zip_of({"a/1.jpg": b"not a jpeg", "b/1.png": b"nor a png"}))
    assert response.status_code == 422
    assert "none of its 2 image files can be decoded" in response.json()["detail"]
    assert leftovers(settings) == []


def test_skipped_files_are_capped_with_a_count(client: TestClient) -> None:
    entries = {f"{cls}/{i}.jpg": jpeg_bytes(8, 8, i) for cls in "ab" for i in range(2)}
    entries |= {f"b/broken-{i:03}.jpg": b"junk" for i in range(45)}
    body = upload(client, zip_of(entries)).json()
    assert body["num_images"] == 4 and body["skipped_count"] == 45
    assert len(body["skipped"]) == 20 and body["skipped"][0]["file"] == "b/broken-000.jpg"
    assert client.get("/datasets").json()["data"][0]["skipped_count"] == 45


def test_images_too_long_or_too_flat_are_skipped_at_registration(client: TestClient) -> None:
    def png(size: tuple[int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", size).save(buffer, "PNG")
        return buffer.getvalue()

    entries = {f"{cls}/{i}.jpg": jpeg_bytes(8, 8, i) for cls in "ab" for i in range(2)}
    entries |= {"a/long.png": png((400_000, 1)), "b/flat.png": png((2000, 10))}
    body = upload(client, zip_of(entries)).json()
    reasons = {item["file"]: item["reason"] for item in body["skipped"]}
    assert "longer than 12000" in reasons["a/long.png"]
    assert "differ by more than 20:1" in reasons["b/flat.png"]


def test_the_upload_limit_refuses_before_storing_and_leaves_nothing(tmp_path: Path) -> None:
    small = migrated_settings(tmp_path, max_upload_bytes=1000)
    with client_for(small) as client:
        response = upload(client, b"x" * 300_000)
    assert response.status_code == 413 and response.json()["field"] == "file"
    assert leftovers(small) == []


@pytest.fixture
def guarded(tmp_path: Path) -> TestClient:
    settings = migrated_settings(tmp_path, api_tokens="s3cret")
    with client_for(settings) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/jobs"),
        ("post", "/datasets/register"),
        ("post", "/datasets"),
        ("post", "/jobs/1/cancel"),
        ("delete", "/jobs/1"),
        ("post", "/models/1/promote"),
    ],
)
def test_no_token_is_401_even_for_an_invalid_body(
    guarded: TestClient, method: str, path: str
) -> None:
    response = guarded.request(
        method, path, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["field"] == "authorization"


def test_with_the_token_the_same_invalid_body_is_422(guarded: TestClient) -> None:
    response = guarded.post(
        "/jobs",
        content=b"{not json",
        headers={"content-type": "application/json", "authorization": "Bearer s3cret"},
    )
    assert response.status_code == 422 and response.json()["field"] == "body"


HUGE = 2**63  # one past the largest row id: SQLite and PostgreSQL would overflow on it


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", f"/jobs/{HUGE}"),
        ("get", f"/jobs/{HUGE}/metrics"),
        ("get", f"/jobs/{HUGE}/checkpoints"),
        ("post", f"/jobs/{HUGE}/cancel"),
        ("delete", f"/jobs/{HUGE}"),
        ("get", f"/datasets/{HUGE}"),
        ("delete", f"/datasets/{HUGE}"),
        ("get", f"/jobs?dataset_id={HUGE}"),
        ("get", f"/jobs?offset={HUGE}"),
        ("get", f"/datasets?offset={HUGE}"),
        ("get", f"/models?dataset_id={HUGE}"),
        ("get", f"/models/serving?dataset_id={HUGE}"),
        ("post", f"/models/{HUGE}/promote"),
        ("delete", f"/models/{HUGE}/promote"),
        ("get", f"/jobs/{HUGE}/curves.png"),
        ("get", f"/jobs/{HUGE}/gradients.png"),
        ("get", f"/compare?jobs=1,{HUGE}"),
        ("get", f"/compare?jobs=1&baseline={HUGE}"),
        ("get", f"/compare/curves.png?jobs={HUGE}"),
        ("get", f"/compare/gradients.png?jobs={HUGE}"),
        ("post", f"/predict?job_id={HUGE}"),
        ("post", f"/predict?dataset_id={HUGE}"),
    ],
)
def test_ids_beyond_64_bits_are_422_not_500(client: TestClient, method: str, url: str) -> None:
    response = client.request(method, url)
    assert response.status_code == 422, response.text
    assert response.json()["field"] in {"job_id", "dataset_id", "offset", "jobs", "baseline"}


def test_a_huge_dataset_id_in_a_job_body_is_422(client: TestClient) -> None:
    body = {"dataset_id": HUGE, "architecture": {"name": "resnet34"}}
    response = client.post("/jobs", json=body)
    assert response.status_code == 422 and response.json()["field"] == "dataset_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hyperparameters": {"epochs": True}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"lr": "0.1"}}, "hyperparameters.lr"),
        ({"repeats": True}, "repeats"),
        ({"dataset_id": "1"}, "dataset_id"),
    ],
)
def test_job_specs_are_strictly_typed(client: TestClient, body: dict, field: str) -> None:
    job = {"dataset_id": 1, "architecture": {"name": "resnet34"}} | body
    response = client.post("/jobs", json=job)
    assert response.status_code == 422 and response.json()["field"] == field, response.text


@pytest.mark.parametrize("where", ["hyperparameters", "options"])
def test_pretrained_weights_are_names_in_the_weights_root(tmp_path: Path, where: str) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "imagenet.pth").write_bytes(b"not checked here")
    settings = migrated_settings(tmp_path / "home", weights_root=weights)

    def create(name: str):
        hyper = {"pretrained_weights": name} if where == "hyperparameters" else {}
        options = {"pretrained_weights": name} if where == "options" else {}
        return client.post(
            "/jobs",
            json={
                "dataset_id": 1,
                "architecture": {"name": "resnet34", "options": options},
                "hyperparameters": hyper,
            },
        )

    with client_for(settings) as client:
        existing, missing = create("/etc/passwd"), create("/no/such/file")
        escape = create("../home/foodlab.db")
        known = create("imagenet.pth")
    field = "hyperparameters" if where == "hyperparameters" else "architecture.options"
    for response in (existing, missing, escape):
        assert response.status_code == 422
        assert response.json()["field"] == f"{field}.pretrained_weights"
    # A path is refused for being a path: the answer says nothing about which files exist.
    assert existing.json()["detail"] == missing.json()["detail"] == escape.json()["detail"]
    assert known.status_code == 404 and known.json()["field"] == "dataset_id"  # name accepted


def test_without_a_weights_root_no_pretrained_weights_are_accepted(client: TestClient) -> None:
    response = client.post(
        "/jobs",
        json={
            "dataset_id": 1,
            "architecture": {"name": "resnet34"},
            "hyperparameters": {"pretrained_weights": "imagenet.pth"},
        },
    )
    assert response.status_code == 422 and "disabled" in response.json()["detail"]


def rooted_client(tmp_path: Path, root: Path) -> TestClient:
    settings = migrated_settings(tmp_path / "home", datasets_root=root)
    return client_for(settings)


@pytest.mark.parametrize("path", ["a" * 300, "x/" * 600, "bad\x00name", ""])
def test_long_or_nul_registration_paths_are_422(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with rooted_client(tmp_path, root) as client:
        response = client.post("/datasets/register", json={"path": path})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "path"


def test_links_inside_the_datasets_root_may_not_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "private.jpg").write_bytes(jpeg_bytes(8, 8, 1))
    root = tmp_path / "root"
    for cls in ("a", "b"):
        (root / "dishes" / cls).mkdir(parents=True)
        for i in range(2):
            (root / "dishes" / cls / f"{i}.jpg").write_bytes(jpeg_bytes(8, 8, i))
    (root / "dishes" / "a" / "leak.jpg").symlink_to(outside / "private.jpg")
    (root / "linked-class").mkdir()
    (root / "linked-class" / "a").symlink_to(outside)
    (root / "linked-class" / "b").symlink_to(root / "dishes" / "b")  # inside: fine
    with rooted_client(tmp_path, root) as client:
        leak = client.post("/datasets/register", json={"path": "dishes"})
        linked = client.post("/datasets/register", json={"path": "linked-class"})
        (root / "dishes" / "a" / "leak.jpg").unlink()
        fine = client.post("/datasets/register", json={"path": "dishes"})
    assert leak.status_code == 422 and "a/leak.jpg is a link" in leak.json()["detail"]
    assert linked.status_code == 422 and "outside the datasets root" in linked.json()["detail"]
    assert str(tmp_path) not in leak.json()["detail"] + linked.json()["detail"]
    assert fine.status_code == 201, fine.text


def test_the_worker_opens_only_weights_the_name_rule_resolves(tmp_path: Path) -> None:
    from core.errors import SpecError
    from core.specs import ArchitectureSpec, Hyperparameters, TrainSpec
    from workers.jobs import with_weight_files

    (tmp_path / "w.pth").write_bytes(b"x")

    def spec(hyper_name: str | None, option_name: str | None) -> TrainSpec:
        options = {"pretrained_weights": option_name} if option_name else {}
        return TrainSpec(
            architecture=ArchitectureSpec(name="resnet34", options=options),
            hyperparameters=Hyperparameters(pretrained_weights=hyper_name),
        )

    resolved = with_weight_files(spec("w.pth", "w.pth"), tmp_path)
    assert resolved.hyperparameters.pretrained_weights == str(tmp_path / "w.pth")
    assert resolved.architecture.options["pretrained_weights"] == str(tmp_path / "w.pth")
    for row in (spec("/etc/passwd", None), spec(None, "/etc/passwd"), spec("w.pth", None)):
        with pytest.raises(SpecError):
            with_weight_files(row, None if row.hyperparameters.pretrained_weights else tmp_path)


def test_errors_never_echo_huge_values_nor_server_paths(
    client: TestClient, settings: Settings
) -> None:
    huge = "x" * 5_000_000
    response = client.post("/jobs", json={"dataset_id": 1, "architecture": {"name": huge}})
    assert response.status_code == 422 and len(response.content) < 5_000
    response = client.post(
        "/jobs",
        json={"dataset_id": 1, "architecture": {"name": "resnet34"}, "hyperparameters": {huge: 1}},
    )
    assert response.status_code == 422 and len(response.content) < 5_000
    assert settings.public_text(f"{settings.home}/datasets/x: broken") == (
        "$FOODLAB_HOME/datasets/x: broken"
    )


def test_checkpoint_paths_are_relative_to_the_home(settings: Settings) -> None:
    from core.tables import Checkpoint
    from service.schemas import CheckpointPublic

    row = Checkpoint(
        kind="best",
        epoch=1,
        path=str(settings.home / "checkpoints/job-1/best.pt"),
        size_bytes=1,
        sha256="0" * 64,
        created_at=datetime.now(),
    )
    assert CheckpointPublic.from_row(row, settings.home).path == "checkpoints/job-1/best.pt"
