"""POST /predict: answers, model choice, and every error a client can cause."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serving_testlib import CLASSES_A, CLASSES_B, Catalog, image_bytes, one_jpeg, upload

from core.tables import JobStatus
from service import batcher as batching
from service.routes import predict as predict_route


def test_top_k_sorted_probabilities_and_model_info(client: TestClient, catalog: Catalog) -> None:
    job = catalog.job(catalog.dataset(), accuracy=0.75, loss=0.5, epoch=7)
    response = client.post("/predict", files=one_jpeg("lunch.jpg"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 1 and body["data"][0]["file"] == "lunch.jpg"
    top = body["data"][0]["top_k"]
    probabilities = [guess["probability"] for guess in top]
    assert len(top) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)  # all 3 classes
    assert {guess["class_name"] for guess in top} == set(CLASSES_A)
    model = body["model"]
    assert model["job_id"] == job.id and model["architecture"]["name"] == "resnet34"
    assert model["epoch"] == 7 and model["val_accuracy"] == 0.75
    assert model["selected_by"] == "best" and model["serving"]
    assert body["latency_ms"] > 0

    top1 = client.post("/predict", params={"top_k": 1}, files=one_jpeg()).json()
    assert [g["class_name"] for g in top1["data"][0]["top_k"]] == [top[0]["class_name"]]
    capped = client.post("/predict", params={"top_k": 50}, files=one_jpeg()).json()
    assert len(capped["data"][0]["top_k"]) == 3  # capped at the class count
    assert client.post("/predict", params={"top_k": 0}, files=one_jpeg()).status_code == 422


def test_files_of_one_request_are_one_batch(
    client: TestClient, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog.job(catalog.dataset())
    batches: list[int] = []
    real_forward = batching.run_forward

    def spy(batch):  # type: ignore[no-untyped-def]
        batches.append(sum(len(work.pixels) for work in batch))
        return real_forward(batch)

    monkeypatch.setattr(batching, "run_forward", spy)
    files = upload(
        ("a.jpg", image_bytes("JPEG")),
        ("b.png", image_bytes("PNG", size=(20, 60))),
        ("c.webp", image_bytes("WEBP", size=(300, 200))),
    )
    body = client.post("/predict", files=files).json()
    assert [item["file"] for item in body["data"]] == ["a.jpg", "b.png", "c.webp"]
    assert batches == [3]


def test_same_image_alone_or_in_a_batch_gets_the_same_answer(
    client: TestClient, catalog: Catalog
) -> None:
    catalog.job(catalog.dataset())
    photo = image_bytes(color=30)
    alone = client.post("/predict", files=upload(("x.jpg", photo))).json()["data"][0]
    files = upload(("y.png", image_bytes("PNG", color=200)), ("x.jpg", photo))
    batched = client.post("/predict", files=files).json()["data"][1]
    assert [g["class_name"] for g in alone["top_k"]] == [g["class_name"] for g in batched["top_k"]]
    for one, other in zip(alone["top_k"], batched["top_k"], strict=True):
        assert one["probability"] == pytest.approx(other["probability"], abs=1e-4)


@pytest.mark.settings(predict_precision="bfloat16", predict_runners=1)
@pytest.mark.slow
def test_bfloat16_serving_says_so_and_agrees_with_float32(
    own_server_client: TestClient, client: TestClient, catalog: Catalog
) -> None:
    catalog.job(catalog.dataset())
    files = upload(("a.jpg", image_bytes(color=30)), ("b.png", image_bytes("PNG", color=200)))
    bf16 = own_server_client.post("/predict", files=files).json()
    fp32 = client.post("/predict", files=files).json()  # the shared float32 server
    assert bf16["precision"] == "bfloat16" and fp32["precision"] == "float32"
    for ours, reference in zip(bf16["data"], fp32["data"], strict=True):
        got = {g["class_name"]: g["probability"] for g in ours["top_k"]}
        expected = {g["class_name"]: g["probability"] for g in reference["top_k"]}
        assert got.keys() == expected.keys() and sum(got.values()) == pytest.approx(1, abs=1e-5)
        assert all(abs(got[name] - p) < 0.05 for name, p in expected.items())


def test_large_photos_are_decoded_only_as_large_as_the_model_needs(
    client: TestClient, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog.job(catalog.dataset())
    decoded: list[tuple[int, int]] = []
    real_draft, real_decode = predict_route.draft_for_size, predict_route.upright_rgb

    def draft_spy(image: Image.Image, shorter_side: int) -> tuple[int, int]:
        assert shorter_side == 36  # the bundle's resize size (32 px crops)
        return real_draft(image, shorter_side)

    def decode_spy(image: Image.Image) -> Image.Image:
        result = real_decode(image)
        decoded.append(result.size)
        return result

    monkeypatch.setattr(predict_route, "draft_for_size", draft_spy)
    monkeypatch.setattr(predict_route, "upright_rgb", decode_spy)
    response = client.post("/predict", files=upload(("big.jpg", image_bytes(size=(1600, 1200)))))
    assert response.status_code == 200, response.text
    assert decoded == [(200, 150)]  # libjpeg's 1/8 scale, not 1600x1200


def test_job_id_asks_for_a_specific_model(client: TestClient, catalog: Catalog) -> None:
    snacks = catalog.dataset()
    catalog.job(snacks, accuracy=0.9, bundle="a")
    other = catalog.job(snacks, accuracy=0.1, bundle="b")
    body = client.post("/predict", params={"job_id": other.id}, files=one_jpeg()).json()
    assert body["model"]["job_id"] == other.id
    assert body["model"]["selected_by"] == "job_id" and not body["model"]["serving"]
    assert {g["class_name"] for g in body["data"][0]["top_k"]} == set(CLASSES_B)

    missing = client.post("/predict", params={"job_id": 999}, files=one_jpeg())
    assert missing.status_code == 404 and missing.json()["field"] == "job_id"
    running = catalog.job(snacks, status=JobStatus.running)
    busy = client.post("/predict", params={"job_id": running.id}, files=one_jpeg())
    assert busy.status_code == 409 and "running" in busy.json()["detail"]
    elsewhere = catalog.dataset("drinks")
    params = {"job_id": other.id, "dataset_id": elsewhere.id}
    assert client.post("/predict", params=params, files=one_jpeg()).status_code == 422


def test_promotion_switches_the_answering_model(client: TestClient, catalog: Catalog) -> None:
    snacks = catalog.dataset()
    best = catalog.job(snacks, accuracy=0.9, bundle="a")
    promoted = catalog.job(snacks, accuracy=0.2, bundle="b")
    assert client.post("/predict", files=one_jpeg()).json()["model"]["job_id"] == best.id
    client.post(f"/models/{promoted.id}/promote")
    body = client.post("/predict", files=one_jpeg()).json()
    assert body["model"]["job_id"] == promoted.id and body["model"]["selected_by"] == "promoted"
    assert {g["class_name"] for g in body["data"][0]["top_k"]} == set(CLASSES_B)
    client.delete(f"/models/{promoted.id}/promote")
    assert client.post("/predict", files=one_jpeg()).json()["model"]["job_id"] == best.id


def test_a_better_job_serves_from_the_next_request(client: TestClient, catalog: Catalog) -> None:
    snacks = catalog.dataset()
    first = catalog.job(snacks, accuracy=0.5, bundle="a")
    assert client.post("/predict", files=one_jpeg()).json()["model"]["job_id"] == first.id
    better = catalog.job(snacks, accuracy=0.6, bundle="b")  # "the worker just finished it"
    assert client.post("/predict", files=one_jpeg()).json()["model"]["job_id"] == better.id


def test_no_servable_model_is_409(client: TestClient, catalog: Catalog) -> None:
    response = client.post("/predict", files=one_jpeg())
    assert response.status_code == 409
    assert "train one" in response.json()["detail"]
    missing = client.post("/predict", params={"dataset_id": 42}, files=one_jpeg())
    assert missing.status_code == 404 and missing.json()["field"] == "dataset_id"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("notes.txt", b"just some text, not a photo", 415, "not a decodable image"),
        ("anim.gif", image_bytes("GIF"), 415, "JPEG, PNG or WebP"),
        ("empty.jpg", b"", 415, "not a decodable image"),
        ("cut.jpg", image_bytes("JPEG", size=(200, 200))[:300], 400, "corrupt or truncated"),
        ("bomb.png", png_header_only(8000, 8000), 400, "64000000 pixels"),
    ],
)
def test_bad_images_are_refused_naming_the_file(
    client: TestClient, catalog: Catalog, name: str, data: bytes, status: int, words: str
) -> None:
    catalog.job(catalog.dataset())
    pixel_limit = Image.MAX_IMAGE_PIXELS
    files = upload(("fine.jpg", image_bytes()), (name, data))
    response = client.post("/predict", files=files)
    assert response.status_code == status, response.text
    assert name in response.json()["detail"] and words in response.json()["detail"]
    assert response.json()["field"] == "file"
    assert Image.MAX_IMAGE_PIXELS == pixel_limit  # nothing global was changed


@pytest.mark.settings(max_image_pixels=1000)
def test_pixel_limit_comes_from_settings(client: TestClient, catalog: Catalog) -> None:
    catalog.job(catalog.dataset())
    response = client.post("/predict", files=upload(("big.png", image_bytes("PNG", (40, 30)))))
    assert response.status_code == 400 and "at most 1000" in response.json()["detail"]
    assert client.post(
        "/predict", files=upload(("ok.png", image_bytes("PNG", (30, 30))))
    ).is_success


@pytest.mark.settings(max_predict_files=2, max_predict_bytes=20_000)
def test_upload_limits(client: TestClient, catalog: Catalog) -> None:
    catalog.job(catalog.dataset())
    three = upload(*[(f"{i}.jpg", image_bytes()) for i in range(3)])
    response = client.post("/predict", files=three)
    assert response.status_code == 400 and "at most 2 images" in response.json()["detail"]

    noise = io.BytesIO()
    Image.effect_noise((200, 200), 100).save(noise, format="PNG")  # incompressible: > 20 kB
    response = client.post("/predict", files=upload(("noise.png", noise.getvalue())))
    assert response.status_code == 413 and "at most 20000 bytes" in response.json()["detail"]

    def chunked_body():  # no Content-Length: the limit is enforced while streaming
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(20):
            yield b"\xff" * 10_000

    headers = {"content-type": "multipart/form-data; boundary=x"}
    response = client.post("/predict", content=chunked_body(), headers=headers)
    assert response.status_code == 413 and "upload is too large" in response.json()["detail"]


def test_malformed_requests(client: TestClient, catalog: Catalog) -> None:
    catalog.job(catalog.dataset())
    no_files = client.post("/predict", data={"note": "hi"})
    assert no_files.status_code == 415  # urlencoded, not multipart
    wrong_field = client.post("/predict", files=[("image", ("a.jpg", image_bytes(), "image/jpeg"))])
    assert wrong_field.status_code == 400 and "use 'file'" in wrong_field.json()["detail"]
    stray = client.post("/predict", files=one_jpeg(), data={"top_k": "2"})
    assert stray.status_code == 400 and "query string" in stray.json()["detail"]
    as_json = client.post("/predict", json={"file": "x"})
    assert as_json.status_code == 415 and "multipart/form-data" in as_json.json()["detail"]


class Payload:
    """Would create `marker` when unpickled by a loader that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_pickle_disguised_as_a_bundle_is_refused(
    client: TestClient, catalog: Catalog, tmp_path: Path, container: str
) -> None:
    marker = tmp_path / "executed"
    evil = tmp_path / "job-1" / "bundle.pt"
    evil.parent.mkdir()
    if container == "torch-zip":
        torch.save({"format": "foodlab.bundle", "state_dict": Payload(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    job = catalog.job(catalog.dataset(), bundle=evil)

    response = client.post("/predict", files=one_jpeg())
    assert response.status_code == 409
    assert f"job {job.id}" in response.json()["detail"]
    promote = client.post(f"/models/{job.id}/promote")
    assert promote.status_code == 409 and f"job {job.id}" in promote.json()["detail"]
    assert not marker.exists()
