"""GET /models, /models/serving and promotion: which model answers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serving_testlib import Catalog

from core.tables import JobStatus


def serving_job(client: TestClient, **params: object) -> int:
    response = client.get("/models/serving", params=params)
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def test_automatic_selection_picks_highest_accuracy(client: TestClient, catalog: Catalog) -> None:
    snacks = catalog.dataset()
    low = catalog.job(snacks, accuracy=0.5)
    best = catalog.job(snacks, accuracy=0.8)
    middle = catalog.job(snacks, accuracy=0.7)
    body = client.get("/models/serving").json()
    assert body["job_id"] == best.id
    assert body["selected_by"] == "best"
    assert body["val_accuracy"] == 0.8 and body["epoch"] == 3
    listed = client.get("/models").json()
    assert [m["job_id"] for m in listed["data"]] == [best.id, middle.id, low.id]
    assert [m["serving"] for m in listed["data"]] == [True, False, False]
    assert listed["count"] == 3


def test_ties_prefer_lower_loss_then_newer(client: TestClient, catalog: Catalog) -> None:
    snacks = catalog.dataset()
    catalog.job(snacks, accuracy=0.8, loss=0.6)
    lower_loss = catalog.job(snacks, accuracy=0.8, loss=0.4)
    assert serving_job(client) == lower_loss.id
    newer = catalog.job(snacks, accuracy=0.8, loss=0.4)
    assert serving_job(client) == newer.id
    catalog.job(snacks, accuracy=None, loss=None)  # metrics missing: ranks last
    assert serving_job(client) == newer.id


def test_only_succeeded_jobs_with_a_bundle_serve(client: TestClient, catalog: Catalog) -> None:
    snacks = catalog.dataset()
    servable = catalog.job(snacks, accuracy=0.6)
    catalog.job(snacks, accuracy=0.9, status=JobStatus.running)
    catalog.job(snacks, accuracy=0.9, status=JobStatus.failed)
    catalog.job(snacks, accuracy=0.9, bundle=None)
    assert serving_job(client) == servable.id
    assert [m["job_id"] for m in client.get("/models").json()["data"]] == [servable.id]


def test_default_dataset_is_that_of_the_latest_job(client: TestClient, catalog: Catalog) -> None:
    old, new = catalog.dataset("old"), catalog.dataset("new")
    old_best = catalog.job(old, accuracy=0.9)
    new_best = catalog.job(new, accuracy=0.4)
    assert serving_job(client) == new_best.id
    assert serving_job(client, dataset_id=old.id) == old_best.id
    listed = client.get("/models", params={"dataset_id": old.id}).json()
    assert [m["job_id"] for m in listed["data"]] == [old_best.id]
    # Each dataset has its serving model; the listing marks both.
    assert all(m["serving"] for m in client.get("/models").json()["data"])


def test_no_servable_model_is_409_saying_what_to_do(client: TestClient, catalog: Catalog) -> None:
    response = client.get("/models/serving")
    assert response.status_code == 409
    assert "train one" in response.json()["detail"] and "promote" in response.json()["detail"]
    snacks = catalog.dataset()
    catalog.job(snacks, status=JobStatus.running)
    assert client.get("/models/serving", params={"dataset_id": snacks.id}).status_code == 409
    assert client.get("/models/serving", params={"dataset_id": 999}).status_code == 404


def test_promotion_is_per_dataset_and_reversible(client: TestClient, catalog: Catalog) -> None:
    snacks, drinks = catalog.dataset("snacks"), catalog.dataset("drinks")
    best = catalog.job(snacks, accuracy=0.9)
    first = catalog.job(snacks, accuracy=0.5)
    second = catalog.job(snacks, accuracy=0.6)
    other = catalog.job(drinks, accuracy=0.7)

    promoted = client.post(f"/models/{first.id}/promote")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["promoted"] and promoted.json()["serving"]
    assert (
        client.get("/models/serving", params={"dataset_id": snacks.id}).json()["selected_by"]
        == "promoted"
    )
    assert serving_job(client, dataset_id=snacks.id) == first.id

    client.post(f"/models/{second.id}/promote")  # un-promotes `first`
    assert serving_job(client, dataset_id=snacks.id) == second.id
    listed = {m["job_id"]: m for m in client.get("/models").json()["data"]}
    assert not listed[first.id]["promoted"] and listed[second.id]["promoted"]
    assert serving_job(client, dataset_id=drinks.id) == other.id  # other dataset untouched

    assert client.delete(f"/models/{second.id}/promote").status_code == 204
    assert serving_job(client, dataset_id=snacks.id) == best.id
    assert client.delete(f"/models/{second.id}/promote").status_code == 204  # idempotent


def test_promotion_refuses_what_cannot_serve(client: TestClient, catalog: Catalog) -> None:
    snacks = catalog.dataset()
    running = catalog.job(snacks, status=JobStatus.running)
    no_bundle = catalog.job(snacks, bundle=None)
    assert client.post("/models/999/promote").status_code == 404
    assert client.delete("/models/999/promote").status_code == 404
    response = client.post(f"/models/{running.id}/promote")
    assert response.status_code == 409 and "running" in response.json()["detail"]
    response = client.post(f"/models/{no_bundle.id}/promote")
    assert response.status_code == 409 and "no inference bundle" in response.json()["detail"]


@pytest.mark.settings(api_tokens="s3cret")
def test_promotion_needs_the_token(client: TestClient, catalog: Catalog) -> None:
    job = catalog.job(catalog.dataset())
    assert client.post(f"/models/{job.id}/promote").status_code == 401
    assert client.delete(f"/models/{job.id}/promote").status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert client.post(f"/models/{job.id}/promote", headers=auth).status_code == 200
    assert client.get("/models").status_code == 200  # reading needs no token
