"""Hot swap without restart, the bounded cache, and batching of concurrent requests."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient
from serving_testlib import CLASSES_A, CLASSES_B, Catalog, one_jpeg, write_bundle

from core.errors import UserError
from core.servable import ServableModel
from core.settings import Settings
from core.tables import Checkpoint, Job
from service import batcher as batching
from service import bundle_cache
from service.app import create_app
from service.deps import current_settings
from service.model_server import ModelServer

WAIT = 60  # seconds; generous, the machine is shared


class Gate:
    """Holds forward passes of one model until released, and says when one is held."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, held_path: Path) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        real_forward = batching.run_forward

        def gated(batch):  # type: ignore[no-untyped-def]
            if batch[0].loaded.key.path == str(held_path.resolve()):
                self.entered.set()
                assert self.release.wait(WAIT)
            return real_forward(batch)

        monkeypatch.setattr(batching, "run_forward", gated)


def class_names(body: dict) -> set[str]:  # type: ignore[type-arg]
    return {guess["class_name"] for guess in body["data"][0]["top_k"]}


@pytest.mark.slow
def test_request_in_flight_keeps_its_model_while_another_is_promoted(
    client: TestClient, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    snacks = catalog.dataset()
    old = catalog.job(snacks, accuracy=0.9, bundle="a")
    new = catalog.job(snacks, accuracy=0.1, bundle="b")
    gate = Gate(monkeypatch, catalog.bundles["a"])
    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(client.post, "/predict", files=one_jpeg())
        assert gate.entered.wait(WAIT)
        # The event loop is free while a forward pass runs.
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        assert time.perf_counter() - started < 5
        assert client.post(f"/models/{new.id}/promote").status_code == 200
        queued = pool.submit(client.post, "/predict", files=one_jpeg())
        gate.release.set()
        first, second = in_flight.result(WAIT).json(), queued.result(WAIT).json()
    assert first["model"]["job_id"] == old.id and class_names(first) == set(CLASSES_A)
    assert second["model"]["job_id"] == new.id and class_names(second) == set(CLASSES_B)


@pytest.mark.slow
def test_rewritten_bundle_is_reloaded(client: TestClient, catalog: Catalog, tmp_path: Path) -> None:
    path = write_bundle(tmp_path / "job-1" / "bundle.pt", CLASSES_A)
    catalog.job(catalog.dataset(), bundle=path)
    assert class_names(client.post("/predict", files=one_jpeg()).json()) == set(CLASSES_A)
    write_bundle(path, CLASSES_B)  # same path, new content (atomic replace)
    assert class_names(client.post("/predict", files=one_jpeg()).json()) == set(CLASSES_B)


def servable(path: Path, job_id: int = 1) -> ServableModel:
    return ServableModel(Job(id=job_id), Checkpoint(path=str(path), epoch=1))


@pytest.fixture
def fake_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Bundle loading replaced by a slow fake that records what it loads."""
    loads: list[str] = []

    def load(path: str, dtype: torch.dtype) -> object:
        loads.append(Path(path).name)
        time.sleep(0.05)
        return SimpleNamespace(path=path)

    monkeypatch.setattr(bundle_cache, "load_for_inference", load)
    return loads


def test_cache_is_a_bounded_lru(tmp_path: Path, fake_loads: list[str]) -> None:
    files = {name: tmp_path / f"{name}.pt" for name in "abc"}
    for path in files.values():
        path.write_bytes(b"weights")
    cache = bundle_cache.BundleCache(capacity=2)
    first_a = cache.get(servable(files["a"]))
    assert cache.get(servable(files["a"])) is first_a  # no reload from disk
    cache.get(servable(files["b"]))
    cache.get(servable(files["a"]))  # a is now the most recent; b is evicted next
    cache.get(servable(files["c"]))
    assert len(cache) == 2
    cache.get(servable(files["a"]))
    assert fake_loads == ["a.pt", "b.pt", "c.pt"]
    cache.get(servable(files["b"]))
    assert fake_loads[-1] == "b.pt"


def test_concurrent_requests_for_a_cold_model_load_it_once(
    tmp_path: Path, fake_loads: list[str]
) -> None:
    path = tmp_path / "a.pt"
    path.write_bytes(b"weights")
    cache = bundle_cache.BundleCache(capacity=2)
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: cache.get(servable(path)), range(4)))
    assert fake_loads == ["a.pt"] and all(item is loaded[0] for item in loaded)


def test_missing_bundle_file_is_409_naming_the_job(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        bundle_cache.BundleCache(capacity=1).get(servable(tmp_path / "gone.pt", job_id=7))
    assert error.value.status_code == 409 and "job 7" in error.value.detail


def tiny_loaded_model() -> bundle_cache.LoadedBundle:
    bundle = SimpleNamespace(
        model=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)),
        class_names=["x", "y", "z"],
    )
    return bundle_cache.LoadedBundle(bundle_cache.BundleKey("m.pt", 1, 1, 1), bundle)  # type: ignore[arg-type]


def test_work_queued_during_a_forward_pass_shares_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = tiny_loaded_model()
    batches: list[list[int]] = []
    release = threading.Event()
    real_forward = batching.run_forward

    def slow_first(batch):  # type: ignore[no-untyped-def]
        batches.append([len(work.pixels) for work in batch])
        if len(batches) == 1:
            assert release.wait(WAIT)
        return real_forward(batch)

    monkeypatch.setattr(batching, "run_forward", slow_first)
    batcher = batching.InferenceBatcher(max_batch_images=8, runners=1)
    pixels = [torch.randn(n, 3, 2, 2) for n in (1, 2, 3, 4)]
    first = batcher.submit(model, pixels[0], top_k=2)
    while not batches:
        time.sleep(0.01)
    later = [batcher.submit(model, p, top_k=2) for p in pixels[1:]]
    release.set()
    results = [first.result(WAIT)] + [future.result(WAIT) for future in later]
    assert batches == [[1], [2, 3], [4]]  # the image budget (8) splits the queued work
    assert [len(result) for result in results] == [1, 2, 3, 4]
    # Batched answers equal one-at-a-time answers.
    with torch.inference_mode():
        alone = model.bundle.model(pixels[2]).softmax(dim=1).max(dim=1).values.tolist()
    assert [top[0][1] for top in results[2]] == pytest.approx(alone, abs=1e-6)


def test_a_second_runner_answers_while_the_first_is_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_loaded_model()
    release = threading.Event()
    real_forward = batching.run_forward

    def first_one_blocks(batch):  # type: ignore[no-untyped-def]
        if batch[0].top_k == 1:
            assert release.wait(WAIT)
        return real_forward(batch)

    monkeypatch.setattr(batching, "run_forward", first_one_blocks)
    for runners, answered_meanwhile in ((2, True), (1, False)):
        release.clear()
        batcher = batching.InferenceBatcher(runners=runners)
        slow = batcher.submit(model, torch.randn(1, 3, 2, 2), top_k=1)
        time.sleep(0.05)  # the slow pass has started on one runner
        quick = batcher.submit(model, torch.randn(1, 3, 2, 2), top_k=2)
        try:
            quick.result(timeout=5 if answered_meanwhile else 0.5)
            answered = True
        except TimeoutError:
            answered = False
        release.set()
        assert answered is answered_meanwhile
        assert len(slow.result(WAIT)[0]) == 1 and len(quick.result(WAIT)[0]) == 2


@pytest.mark.settings(model_cache_size=3)
def test_the_model_server_is_built_at_startup(settings: Settings) -> None:
    app = create_app()
    app.dependency_overrides[current_settings] = lambda: settings
    assert getattr(app.state, "model_server", None) is None
    with TestClient(app):
        server = app.state.model_server  # before any request: the lifespan built it
        assert isinstance(server, ModelServer) and server.cache.capacity == 3
