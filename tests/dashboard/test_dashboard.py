"""The dashboard in a real headless Chromium against a real `foodlab up` (API and worker).

Each test saves a screenshot into the `screenshots` folder (printed at the end of the run).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from demo.dishes import write_dataset_zip
from tests.dashboard.conftest import TOKEN
from tests.dashboard.dashboard_testlib import VIEWPORT, Server, Watched, watch

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TINY = {"epochs": 2, "image_size": 32}


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 dishes x 16 generated photos: 2 training batches of 32, so an epoch takes a moment."""
    return write_dataset_zip(tmp_path_factory.mktemp("zip") / "dishes.zip", per_class=16, size=40)


@pytest.fixture(scope="module")
def dataset(server: Server, dataset_zip: Path) -> dict:
    with dataset_zip.open("rb") as handle:
        response = server.http.post(
            "/datasets", files={"file": ("dishes.zip", handle)}, data={"name": "dishes"}
        )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def pair(server: Server, dataset: dict) -> list[int]:
    """Plain-34 and ResNet-34, trained the same tiny way: queued early, so the worker trains
    them while the first tests use only the browser."""
    return [start_job(server, dataset, name) for name in ("plain34", "resnet34")]


def start_job(server: Server, dataset: dict, architecture: str, **hyper: object) -> int:
    body = {
        "dataset_id": dataset["id"],
        "architecture": {"name": architecture},
        "hyperparameters": {**TINY, **hyper},
    }
    response = server.http.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def finished_pair(server: Server, pair: list[int]) -> list[int]:
    for job_id in pair:
        assert server.wait_for_status(job_id, {"succeeded", "failed"}, 120)["status"] == "succeeded"
    return pair


def shot(watched: Watched, folder: Path, name: str) -> None:
    watched.page.screenshot(path=folder / f"{name}.png")


def test_upload_a_dataset_through_the_page(
    server: Server, pair: list[int], watched: Watched, screenshots: Path, tmp_path: Path
) -> None:
    archive = write_dataset_zip(tmp_path / "uploaded.zip", per_class=6, size=40)
    page = watched.page
    page.goto(f"{server.url}/ui/datasets")
    page.get_by_label("Zip file").set_input_files(archive)
    page.get_by_label("Name", exact=True).fill("from-the-page")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("30 images in 5 classes")
    card = page.locator("article.dataset", has_text="from-the-page")
    expect(card.locator("tbody tr")).to_have_count(5)
    expect(card).to_contain_text("No skipped files.")
    first = card.locator(".thumbs img").first
    expect(first).to_be_visible()
    loaded = "img => img.complete && img.naturalWidth > 0"
    page.wait_for_function(loaded, arg=first.element_handle())
    assert page.locator("#upload-progress").evaluate("bar => bar.value") == 1
    # Thumbnails are cached under FOODLAB_HOME, and nothing was written into the dataset.
    assert list((server.home / "cache" / "thumbnails").rglob("*.jpg"))
    shot(watched, screenshots, "datasets-upload")
    watched.assert_clean()


def test_a_negative_learning_rate_is_explained_next_to_its_field(
    server: Server, dataset: dict, watched: Watched, screenshots: Path
) -> None:
    page = watched.page
    jobs_before = server.http.get("/jobs").json()["count"]
    page.goto(f"{server.url}/ui/?new=1")
    lr = page.locator('[data-field="hyperparameters.lr"]')
    expect(lr).to_have_value("0.001")  # the reference preset, from GET /hyperparameters
    lr.fill("-0.1")
    expect(page.locator("#job-submit")).to_be_enabled(timeout=120_000)  # architectures loaded
    page.get_by_role("button", name="Start job").click()
    message = page.locator('[data-error-for="hyperparameters.lr"]')
    expect(message).to_contain_text("hyperparameters.lr: Input should be greater than 0")
    assert lr.get_attribute("aria-invalid") == "true"
    assert server.http.get("/jobs").json()["count"] == jobs_before  # nothing was queued
    shot(watched, screenshots, "new-job-error")
    watched.assert_clean(allowed_statuses=(422,))


def test_a_job_from_the_form_gains_a_point_per_epoch(
    server: Server, dataset: dict, watched: Watched, screenshots: Path
) -> None:
    page = watched.page
    # Record every point count the accuracy chart shows, from the first draw on.
    page.add_init_script("""
        window.seenPoints = [];
        new MutationObserver(() => {
          const chart = document.getElementById("chart-accuracy");
          if (!chart || chart.dataset.observed) return;
          chart.dataset.observed = "1";
          new MutationObserver(() => window.seenPoints.push(Number(chart.dataset.points)))
            .observe(chart, { attributes: true, attributeFilter: ["data-points"] });
        }).observe(document, { childList: true, subtree: true });
    """)
    page.goto(f"{server.url}/ui/?new=1")
    expect(page.locator("#job-submit")).to_be_enabled(timeout=120_000)  # architectures loaded
    page.locator("#job-dataset").select_option(str(dataset["id"]))
    page.locator("#job-architecture").select_option("resnet34")
    # 3 epochs at 64 px: each takes longer than the page's 1 s poll, so the curve is seen
    # growing (at 32 px two epochs could both land between two polls: a flaky test).
    page.locator('[data-field="hyperparameters.epochs"]').fill("3")
    page.locator('[data-field="hyperparameters.image_size"]').fill("64")
    page.get_by_role("button", name="Start job").click()
    page.wait_for_url("**/ui/jobs/*")
    job_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator("#chart-accuracy")).to_have_attribute("data-points", "3")
    seen = [n for n in page.evaluate("window.seenPoints") if n]
    # Points arrived while the job ran, without a reload: the chart grew through at least one
    # partial curve to the full one, never shrinking.
    assert seen == sorted(seen) and seen[-1] == 3 and len(set(seen)) >= 2, seen
    expect(page.locator("#epochs tbody tr")).to_have_count(3)
    job = server.job(job_id)
    assert job["hyperparameters"]["image_size"] == 64 and job["architecture"]["name"] == "resnet34"
    expect(page.locator("#confusion table")).to_be_visible()
    expect(page.locator("#checkpoints tbody tr").first).to_be_visible()
    shot(watched, screenshots, "job")
    watched.assert_clean()


def test_compare_two_jobs(
    server: Server, finished_pair: list[int], watched: Watched, screenshots: Path
) -> None:
    page = watched.page
    page.goto(f"{server.url}/ui/?sort=id")
    for job_id in finished_pair:
        page.get_by_label(f"select job {job_id}", exact=True).check()
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url("**/ui/compare?jobs=*")
    expect(page.locator("#chart-curves")).to_have_attribute("data-series", "2")
    expect(page.locator("#chart-curves")).to_have_attribute("data-points", "2")
    rows = page.locator("#compare-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("plain34")
    expect(rows.nth(0)).to_contain_text("(baseline)")
    expect(rows.nth(1)).to_contain_text("resnet34")
    expect(page.locator("#tradeoff svg g.point")).to_have_count(2)
    expect(page.locator("#chart-gradflow")).to_have_attribute("data-series", "4")
    csv = server.http.get(page.locator("#export-csv").get_attribute("href"))
    assert csv.status_code == 200 and "plain34" in csv.text
    shot(watched, screenshots, "compare")
    watched.assert_clean()


def test_cancel_a_running_job(
    server: Server, dataset: dict, watched: Watched, screenshots: Path
) -> None:
    job_id = start_job(server, dataset, "resnet34", epochs=200)
    server.wait_for_status(job_id, {"running"}, 120)
    page = watched.page
    page.goto(f"{server.url}/ui/")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator("progress")).to_be_visible()
    row.get_by_role("button", name=f"Cancel job {job_id}").click()
    # The page keeps polling while the job runs, so its row turns without a reload.
    expect(row.locator("td.status")).to_have_text("cancelled", timeout=60_000)
    assert server.wait_for_status(job_id, {"cancelled"}, 60)["progress"]["epoch"] < 200
    shot(watched, screenshots, "jobs-cancelled")
    watched.assert_clean()


def test_predict_an_uploaded_photo(
    server: Server,
    dataset: dict,
    finished_pair: list[int],
    dataset_zip: Path,
    watched: Watched,
    screenshots: Path,
    tmp_path: Path,
) -> None:
    with zipfile.ZipFile(dataset_zip) as archive:
        name = next(n for n in archive.namelist() if n.startswith("sate/") and n.endswith(".jpg"))
        photo = tmp_path / "sate.jpg"
        photo.write_bytes(archive.read(name))
    page = watched.page
    page.goto(f"{server.url}/ui/predict")
    page.get_by_label("Photos", exact=True).set_input_files(photo)
    answer = page.locator("#answer-model")
    expect(answer).to_contain_text("job #")
    expect(answer).to_contain_text("selected by best")
    bars = page.locator(".prediction .bars .row")
    expect(bars).to_have_count(3)
    assert bars.first.locator("span").first.inner_text() in dataset["classes"]
    served = server.http.get("/models/serving").json()["job_id"]
    assert f"job #{served}" in answer.inner_text()
    # Pick the other model explicitly: it answers instead.
    other = next(job_id for job_id in finished_pair if job_id != served)
    page.get_by_label("Model").select_option(str(other))
    page.get_by_role("button", name="Classify").click()
    expect(answer).to_contain_text(f"job #{other}")
    expect(answer).to_contain_text("selected by job_id")
    shot(watched, screenshots, "predict")
    watched.assert_clean()


PAGES = {
    "jobs": "/ui/",
    "job": "/ui/jobs/{first}",
    "compare": "/ui/compare?jobs={ids}",
    "datasets": "/ui/datasets",
    "predict": "/ui/predict",
}


def test_every_page_loads_without_errors_or_remote_requests(
    server: Server, finished_pair: list[int], watched: Watched, screenshots: Path
) -> None:
    page = watched.page
    assert server.http.get("/", follow_redirects=False).headers["location"] == "/ui/"
    ids = ",".join(map(str, finished_pair))
    for name, path in PAGES.items():
        page.goto(server.url + path.format(first=finished_pair[1], ids=ids))
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").count() == 1
        # What the head asked for early, the page's module took (the same paths, not twice).
        assert page.evaluate("Object.keys(window.foodlabEarly || {})") == [], name
        shot(watched, screenshots, f"page-{name}")
    assert watched.requests, "the pages requested nothing?"
    watched.assert_clean()


def test_a_token_is_sent_once_it_is_entered(
    locked_server: Server, browser: Browser, dataset_zip: Path, screenshots: Path
) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    watched = watch(context.new_page())
    page = watched.page
    page.goto(f"{locked_server.url}/ui/datasets")
    expect(page.locator("#token-state")).to_have_text("required")
    page.get_by_label("Zip file").set_input_files(dataset_zip)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("token needed")
    expect(page.locator("#token-needed")).to_be_visible()
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Save token").click()
    expect(page.locator("#token-needed")).to_be_hidden()
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("80 images in 5 classes")
    assert page.evaluate("localStorage.getItem('foodlab.token')") == TOKEN
    page.reload()
    expect(page.get_by_label("API token")).to_have_value(TOKEN)
    shot(watched, screenshots, "token")
    watched.assert_clean(allowed_statuses=(401,))
    context.close()
