"""POST /predict under hostile images: sizes refused on the header, a pixel budget per request,
one full-size decode at a time per request and a bounded number of requests decoding."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serving_testlib import Catalog

from service.routes import predict as predict_route


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, "PNG")
    return buffer.getvalue()


def send(client: TestClient, *images: bytes):
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return client.post("/predict", files=files)


def test_an_image_long_on_one_side_is_refused_before_decoding(
    client: TestClient, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog.job(catalog.dataset())
    decoded: list[object] = []
    monkeypatch.setattr(predict_route, "upright_rgb", decoded.append)
    long = send(client, png(400_000, 1))  # 467 bytes, 0.4 MP: under the pixel limit
    flat = send(client, png(3000, 100))
    assert long.status_code == 400 and "longer than 12000" in long.json()["detail"]
    assert flat.status_code == 400 and "differ by more than 20:1" in flat.json()["detail"]
    assert decoded == []


@pytest.mark.settings(max_request_pixels=20_000)
def test_the_pixels_of_a_whole_request_are_budgeted(client: TestClient, catalog: Catalog) -> None:
    catalog.job(catalog.dataset())
    assert send(client, png(100, 100)).status_code == 200  # 10,000 pixels
    over = send(client, png(100, 100), png(100, 100), png(10, 10))  # each fine, 20,100 in all
    assert over.status_code == 413 and over.json()["field"] == "file"
    assert "20100 pixels; at most 20000" in over.json()["detail"]


@pytest.mark.settings(max_concurrent_decodes=1, max_request_pixels=10**9)
def test_requests_decode_one_at_a_time_when_told(
    client: TestClient, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog.job(catalog.dataset())
    real_decode = predict_route.upright_rgb
    decoding, most = [0], [0]
    lock = threading.Lock()

    def slow_decode(image: Image.Image) -> Image.Image:
        with lock:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
        time.sleep(0.05)
        try:
            return real_decode(image)
        finally:
            with lock:
                decoding[0] -= 1

    monkeypatch.setattr(predict_route, "upright_rgb", slow_decode)
    with ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(lambda _: send(client, png(64, 64), png(64, 64)).status_code, range(4))
        )
    assert statuses == [200] * 4
    assert most[0] == 1  # never two images decoded at once, across requests or within one
