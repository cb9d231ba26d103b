"""Screenshots of every dashboard page from a running foodlab, for the README.

    .venv/bin/python docs/dashboard/capture.py --url http://127.0.0.1:8000 --jobs 1,2,3,4 \
        --job 2 --photo sate.jpg

Saves jobs.png, job.png, compare.png, datasets.png and predict.png (1366x768) next to itself,
in headless Chromium (Debian's chromium).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--jobs", required=True, help="comma-separated ids for the compare page")
    parser.add_argument("--job", type=int, required=True, help="the job page to show")
    parser.add_argument("--photo", type=Path, required=True, help="a photo for the predict page")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        for name, path in (
            ("jobs", "/ui/"),
            ("job", f"/ui/jobs/{args.job}"),
            ("compare", f"/ui/compare?jobs={args.jobs}"),
            ("datasets", "/ui/datasets"),
        ):
            page.goto(args.url + path)
            page.wait_for_load_state("networkidle")
            if name == "compare":
                page.get_by_label("Curves").select_option("groups")
                page.get_by_label("Smoothing").fill("0.3")
            page.screenshot(path=HERE / f"{name}.png")
        page.goto(f"{args.url}/ui/predict")
        page.get_by_label("Photos", exact=True).set_input_files(args.photo)
        page.locator("#answer").wait_for()
        page.screenshot(path=HERE / "predict.png")
        browser.close()


if __name__ == "__main__":
    main()
