"""GET /compare (JSON, CSV, Markdown), the PNG endpoints, and latency measured once per job."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from experiments_testlib import add_run
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from core.tables import Dataset, EpochMetric
from tests.support import client_for, make_settings


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with client_for(make_settings(tmp_path / "home", database_url=db_url)) as test_client:
        yield test_client


def png_size(response) -> tuple[int, int]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image.size


def test_compare_returns_rows_deltas_and_warnings(
    client: TestClient, session: Session, dataset: Dataset
) -> None:
    plain = add_run(session, dataset, "plain34", [0.2, 0.3], hyperparameters={"image_size": 64})
    resnet = add_run(session, dataset, "resnet34", [0.3, 0.6])
    body = client.get(
        "/compare", params={"jobs": f"{plain.id},{resnet.id}", "baseline": resnet.id}
    ).json()
    assert body["baseline_job_id"] == resnet.id
    rows = {row["job_id"]: row for row in body["rows"]}
    assert rows[resnet.id]["best_val_accuracy"] == 0.6
    assert rows[plain.id]["delta"]["best_val_accuracy"]["absolute"] == pytest.approx(-0.3)
    assert rows[plain.id]["delta"]["best_val_accuracy"]["relative"] == pytest.approx(-0.5)
    assert [w["field"] for w in body["warnings"]] == ["hyperparameters.image_size"]


def test_compare_as_csv_and_markdown(client: TestClient, session: Session, dataset: Dataset):
    a = add_run(session, dataset, "plain34", [0.2])
    b = add_run(session, dataset, "resnet34", [0.5])
    jobs = f"{a.id},{b.id}"
    csv = client.get("/compare", params={"jobs": jobs, "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert len(csv.text.splitlines()) == 3
    md = client.get("/compare", params={"jobs": jobs, "format": "md"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert "| 2 | resnet34 |" in md.text and "+30.0 pp" in md.text


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"jobs": "1,x"}, 422, "jobs"),
        ({"jobs": ""}, 422, "jobs"),
        ({"jobs": "1,404"}, 404, "jobs"),
        ({"jobs": "1", "baseline": 2}, 422, "baseline"),
    ],
)
def test_compare_errors_name_the_parameter(
    client: TestClient, session: Session, dataset: Dataset, params, status, field
) -> None:
    add_run(session, dataset, "plain34", [0.2])
    response = client.get("/compare", params=params)
    assert (response.status_code, response.json()["field"]) == (status, field)


@pytest.mark.slow
def test_png_endpoints(client: TestClient, session: Session, dataset: Dataset) -> None:
    a = add_run(session, dataset, "plain34", [0.2, 0.3])
    b = add_run(session, dataset, "resnet34", [0.3, 0.5])
    assert png_size(client.get(f"/jobs/{a.id}/curves.png")) == (1200, 480)
    assert png_size(client.get(f"/jobs/{a.id}/gradients.png")) == (1200, 480)
    assert png_size(client.get("/compare/curves.png", params={"jobs": f"{a.id},{b.id}"})) == (
        1200,
        480,
    )
    assert png_size(client.get("/compare/gradients.png", params={"jobs": f"{a.id},{b.id}"}))
    missing = client.get("/jobs/999/curves.png")
    assert (missing.status_code, missing.json()["field"]) == (404, "job_id")


def test_latency_comes_from_the_job_and_may_be_missing(
    client: TestClient, session: Session, dataset: Dataset
) -> None:
    timed = add_run(session, dataset, "resnet34", [0.3], inference_ms=4.25)
    untimed = add_run(session, dataset, "resnet34", [0.3], inference_ms=None)
    rows = client.get("/compare", params={"jobs": f"{timed.id},{untimed.id}"}).json()["rows"]
    assert [row["inference_ms"] for row in rows] == [4.25, None]


@pytest.mark.slow
def test_a_picture_is_drawn_again_only_when_what_it_shows_changed(
    client: TestClient, session: Session, dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeated PNG requests answer the picture already drawn; a new epoch, a changed value
    or another job set draws anew (the figure cache is keyed by the rows themselves)."""
    from service.routes import compare as routes

    drawn: list[bytes] = []
    real_to_png = routes.to_png
    monkeypatch.setattr(routes, "FIGURES", routes.FigureCache())
    monkeypatch.setattr(routes, "to_png", lambda figure: drawn.append(b"") or real_to_png(figure))
    a = add_run(session, dataset, "plain34", [0.2, 0.3])
    b = add_run(session, dataset, "resnet34", [0.3, 0.5])
    pair = {"jobs": f"{a.id},{b.id}"}
    first = client.get("/compare/curves.png", params=pair)
    again = client.get("/compare/curves.png", params=pair)
    assert first.content == again.content and len(drawn) == 1
    assert again.headers["cache-control"] == "no-store"

    session.add(EpochMetric(**{**epoch_values(b.metrics[-1]), "epoch": 3, "val_accuracy": 0.7}))
    session.commit()
    grown = client.get("/compare/curves.png", params=pair)
    assert len(drawn) == 2 and grown.content != first.content

    b.metrics[0].val_loss = 5.0  # a resumed job rewrote an epoch: same count, other values
    session.commit()
    client.get("/compare/curves.png", params=pair)
    assert len(drawn) == 3
    client.get("/compare/curves.png", params={"jobs": f"{b.id}"})
    client.get("/compare/gradients.png", params=pair)
    client.get(f"/jobs/{b.id}/curves.png")
    assert len(drawn) == 6
    client.get(f"/jobs/{b.id}/curves.png")
    assert len(drawn) == 6


def epoch_values(row: EpochMetric) -> dict:
    columns = EpochMetric.__table__.columns.keys()
    return {name: getattr(row, name) for name in columns if name not in {"id", "created_at"}}
