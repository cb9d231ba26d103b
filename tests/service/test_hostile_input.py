"""Hostile uploads and bodies: each answered with a 4xx that names the problem, nothing left
behind on disk, and the token checked before any body is looked at."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.migrate import upgrade
from core.settings import Settings
from tests.service.conftest import client_for, make_settings
from tests.service.malformed_zips import MALFORMED, jpeg_bytes

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
    return client.post("/datasets", files={"file": ("d.zip", data, "application/zip")},
                       headers=headers)


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
    response = upload(client, zip_of({"pizza/1.jpg": jpeg_bytes(8, 8, 1),
                                      "pizza/2.jpg": jpeg_bytes(8, 8, 2)}))
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
    small = make_settings(tmp_path, max_upload_bytes=1000)
    upgrade(small.database)
    with client_for(small) as client:
        response = upload(client, b"x" * 300_000)
    assert response.status_code == 413 and response.json()["field"] == "file"
    assert leftovers(small) == []


@pytest.fixture
def guarded(tmp_path: Path) -> TestClient:
    settings = make_settings(tmp_path, api_tokens="s3cret")
    upgrade(settings.database)
    with client_for(settings) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/jobs"), ("post", "/datasets/register"), ("post", "/datasets"),
     ("post", "/jobs/1/cancel"), ("delete", "/jobs/1"), ("post", "/models/1/promote")],
)
def test_no_token_is_401_even_for_an_invalid_body(guarded: TestClient, method: str,
                                                   path: str) -> None:
    response = guarded.request(method, path, content=b"{not json",
                               headers={"content-type": "application/json"})
    assert response.status_code == 401, response.text
    assert response.json()["field"] == "authorization"


def test_with_the_token_the_same_invalid_body_is_422(guarded: TestClient) -> None:
    response = guarded.post("/jobs", content=b"{not json", headers={
        "content-type": "application/json", "authorization": "Bearer s3cret"})
    assert response.status_code == 422 and response.json()["field"] == "body"
