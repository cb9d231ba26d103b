"""The dashboard's server side: pages, static files, and the small endpoints its pages use.

What the pages do in a browser is in tests/dashboard (real Chromium against `foodlab up`).
"""

from __future__ import annotations

import io
import json
import tomllib
from contextlib import closing
from pathlib import Path, PurePosixPath

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

from core.db import open_session
from core.settings import Settings
from core.specs import PRESETS, Hyperparameters
from core.tables import EpochMetric, Job
from tests.service.test_api import dataset_id, job_body  # noqa: F401 (fixture)

PAGES = ["/ui/", "/ui/jobs/1", "/ui/compare?jobs=1,2", "/ui/datasets", "/ui/predict"]


def test_root_redirects_to_the_dashboard(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui/"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_html_with_its_module_and_no_remote_resource(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = path.split("?")[0].rstrip("/").split("/")[2] if path != "/ui/" else "jobs"
    page = "job" if path.startswith("/ui/jobs/") else page
    assert f'src="/ui/static/js/{page}.js"' in response.text
    assert "http://" not in response.text and "https://" not in response.text


@pytest.mark.parametrize(
    ("query", "first"),
    [
        ("", "/jobs?sort=-id&limit=50&offset=0"),
        (
            "?status=running&sort=id&limit=0&offset=050",
            "/jobs?status=running&sort=id&limit=50&offset=50",
        ),
        (
            "?architecture=se resnet&new=1",
            "/jobs?architecture=se+resnet&sort=-id&limit=50&offset=0",
        ),
        ("?limit=1e2", "/datasets?limit=500"),  # Number("1e2") is the page's to work out
    ],
)
def test_the_jobs_page_asks_for_its_first_answers_before_its_modules_load(
    client: TestClient, query: str, first: str
) -> None:
    """The paths jobs.js builds (readState, queryString), started from the page's head."""
    requested = prefetched(client.get(f"/ui/{query}").text)
    assert requested[0] == first
    assert requested[-3:] == ["/datasets?limit=500", "/architectures", "/hyperparameters"]


def test_the_compare_page_asks_for_both_answers_before_its_modules_load(client: TestClient) -> None:
    assert prefetched(client.get("/ui/compare?jobs= 3, 1,,2").text) == [
        "/compare?jobs=3,1,2",
        "/compare/metrics?jobs=3,1,2",
    ]
    assert prefetched(client.get("/ui/compare?jobs=3,1&baseline=1").text)[0] == (
        "/compare?jobs=3,1&baseline=1"
    )
    assert "foodlabEarly" not in client.get("/ui/compare").text  # no jobs: nothing to ask


def prefetched(html: str) -> list[str]:
    listed = html.split("for (const path of ", 1)[1].split(")", 1)[0]
    return json.loads(listed)


def test_static_files_and_the_vendored_chart_library_are_served(client: TestClient) -> None:
    library = client.get("/ui/static/vendor/uplot/uPlot.esm.js")
    assert library.status_code == 200 and "export { uPlot as default }" in library.text
    assert "MIT License" in client.get("/ui/static/vendor/uplot/LICENSE").text
    assert "1.6.32" in client.get("/ui/static/vendor/uplot/VERSION.md").text
    assert client.get("/ui/static/js/api.js").status_code == 200
    assert client.get("/ui/static/../app.py").status_code == 404


def test_hyperparameter_schema_is_the_one_the_api_validates(client: TestClient) -> None:
    body = client.get("/hyperparameters").json()
    assert set(body["schema"]["properties"]) == set(Hyperparameters.model_fields)
    assert body["schema"]["properties"]["lr"]["exclusiveMinimum"] == 0
    assert body["presets"] == {name: values.model_dump() for name, values in PRESETS.items()}
    assert body["default_preset"] == "reference"


def test_jobs_sort_by_best_accuracy_with_unfinished_jobs_last(
    client: TestClient,
    dataset_id: int,
    settings: Settings,  # noqa: F811
) -> None:
    ids = [client.post("/jobs", json=job_body(dataset_id)).json()["id"] for _ in range(3)]
    with closing(open_session(settings.database)) as session:
        for job_id, accuracy in ((ids[0], 0.5), (ids[2], 0.8)):
            session.execute(update(Job).where(Job.id == job_id).values(best_val_accuracy=accuracy))
        session.commit()

    def order(sort: str) -> list[int]:
        return [job["id"] for job in client.get("/jobs", params={"sort": sort}).json()["data"]]

    assert order("-best_val_accuracy") == [ids[2], ids[0], ids[1]]
    assert order("best_val_accuracy") == [ids[0], ids[2], ids[1]]
    assert order("id") == ids and order("-id") == ids[::-1]
    page = client.get("/jobs", params={"sort": "-best_val_accuracy", "offset": 1, "limit": 1})
    assert [job["id"] for job in page.json()["data"]] == [ids[0]]
    bad = client.get("/jobs", params={"sort": "password"})
    assert bad.status_code == 422 and bad.json()["field"] == "sort"


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_thumbnails_are_small_cached_under_home_and_never_in_the_dataset(
    client: TestClient,
    dataset_id: int,
    settings: Settings,  # noqa: F811
) -> None:
    dataset = client.get(f"/datasets/{dataset_id}").json()
    dataset_folder = settings.datasets_dir / str(dataset_id)
    before = files_under(dataset_folder)
    response = client.get(f"/datasets/{dataset_id}/thumbnails/1/0")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) <= 128
    cached = list((settings.cache_dir / "thumbnails" / str(dataset_id)).rglob("1-0.jpg"))
    assert len(cached) == 1
    cached[0].write_bytes(response.content[:-1] + b"\xd9")  # served from the cache from now on
    assert client.get(f"/datasets/{dataset_id}/thumbnails/1/0").content == cached[0].read_bytes()
    assert files_under(dataset_folder) == before
    per_class = dataset["counts"][dataset["classes"][0]]["total"]
    for path, field in (
        (f"0/{per_class}", "index"),
        ("0/8", "index"),
        ("9/0", "class_index"),
        ("0/-1", "index"),
    ):
        missing = client.get(f"/datasets/{dataset_id}/thumbnails/{path}")
        assert missing.status_code == 404 and missing.json()["field"] == field, path
    assert client.get("/datasets/999/thumbnails/0/0").status_code == 404


def add_epochs(settings: Settings, job_id: int, count: int) -> None:
    with closing(open_session(settings.database)) as session:
        for epoch in range(1, count + 1):
            session.add(
                EpochMetric(
                    job_id=job_id,
                    epoch=epoch,
                    train_loss=1.0,
                    train_accuracy=0.5,
                    val_loss=1.1,
                    val_accuracy=0.4,
                    lr=0.1,
                    epoch_seconds=1.0,
                    train_images_per_second=10.0,
                    generalization_gap=0.1,
                    grad_norms={"stem": 2.0, "classifier": 0.5},
                )
            )
        session.commit()


def test_compare_metrics_gives_every_jobs_epochs_in_one_answer(
    client: TestClient,
    dataset_id: int,
    settings: Settings,  # noqa: F811
) -> None:
    ids = [client.post("/jobs", json=job_body(dataset_id)).json()["id"] for _ in range(2)]
    add_epochs(settings, ids[1], 2)
    answer = client.get("/compare/metrics", params={"jobs": f"{ids[1]},{ids[0]}"}).json()
    assert [(m["job_id"], m["count"]) for m in answer] == [(ids[1], 2), (ids[0], 0)]
    single = client.get(f"/jobs/{ids[1]}/metrics").json()["data"]
    assert answer[0]["data"] == single
    assert client.get("/compare/metrics", params={"jobs": "999"}).status_code == 404


def test_every_dashboard_file_ships_with_the_package() -> None:
    """pyproject's package-data must match every template and static file (pip install . and
    the Docker image install the package, not the source tree)."""
    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    service = repo / "service"
    files = [
        p
        for folder in ("static", "templates")
        for p in (service / folder).rglob("*")
        if p.is_file()
    ]
    assert files
    # PurePath.match, like setuptools' globs, never lets "*" cross a "/".
    unshipped = [
        str(p.relative_to(service))
        for p in files
        if not any(
            PurePosixPath(p.relative_to(service).as_posix()).match(pattern) for pattern in patterns
        )
    ]
    assert unshipped == []
