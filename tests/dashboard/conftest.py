"""Browser tests: one real `foodlab up` for the module, one headless Chromium for the session.

Screenshots go to $FOODLAB_SCREENSHOTS, else a temporary folder; the path is printed at the
end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.dashboard.dashboard_testlib import (
    CHROMIUM,
    VIEWPORT,
    Server,
    Watched,
    launch_chromium,
    watch,
)

SCREENSHOTS: list[Path] = []
TOKEN = "s3cret"
# Two cores shared with a training worker: give the page time to answer.
expect.set_options(timeout=20_000)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if SCREENSHOTS:
        terminalreporter.write_line(f"dashboard screenshots: {SCREENSHOTS[0]}")


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("FOODLAB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    SCREENSHOTS.append(folder)
    print(f"dashboard screenshots: {folder}")
    return folder


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """`foodlab up` (API and worker) and, booting beside it, an API with tokens for the token
    test (`foodlab api`: that test trains nothing, and a second worker would only take CPU)."""
    folder = tmp_path_factory.mktemp("dashboard-up")
    started = {
        "open": Server(folder / "open", folder / "open.log"),
        "locked": Server(
            folder / "locked", folder / "locked.log", command="api", FOODLAB_API_TOKENS=TOKEN
        ),
    }
    try:
        yield started
    finally:
        for running in started.values():
            running.stop()


@pytest.fixture(scope="module")
def server(servers: dict[str, Server]) -> Server:
    servers["open"].wait_ready()
    return servers["open"]


@pytest.fixture(scope="module")
def locked_server(servers: dict[str, Server]) -> Server:
    servers["locked"].wait_ready()
    return servers["locked"]


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield watch(page)
    context.close()
