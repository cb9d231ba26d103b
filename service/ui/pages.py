"""Dashboard pages: Jinja2 templates that load ES modules; every number comes from the JSON API.

No build step and no CDN: the scripts, styles and the charting library (uPlot, vendored with
its licence under static/vendor/) are served from the package itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from core.tables import JobStatus
from service.deps import SettingsDep

PACKAGE = Path(__file__).resolve().parent.parent
STATIC = PACKAGE / "static"
templates = Jinja2Templates(directory=PACKAGE / "templates")

router = APIRouter(prefix="/ui", include_in_schema=False)
root_router = APIRouter(include_in_schema=False)

# Each page's ES modules beyond its own, preloaded so the browser fetches them side by side
# instead of one import level at a time.
CHARTS = ["js/api.js", "js/charts.js", "vendor/uplot/uPlot.esm.js"]
MODULES = {
    "jobs": ["js/api.js", "js/jobform.js"],
    "job": CHARTS,
    "compare": CHARTS,
    "datasets": ["js/api.js"],
    "predict": ["js/api.js"],
}

# (path, template, title in the navigation)
NAVIGATION = (
    ("/ui/", "jobs", "Jobs"),
    ("/ui/compare", "compare", "Compare"),
    ("/ui/datasets", "datasets", "Datasets"),
    ("/ui/predict", "predict", "Predict"),
)


def _page(
    request: Request,
    settings: SettingsDep,
    page: str,
    prefetch: list[str] | None = None,
    **context: object,
) -> HTMLResponse:
    config = {
        "tokens_required": bool(settings.tokens),
        "register_enabled": settings.datasets_root is not None,
        "statuses": [status.value for status in JobStatus],
        **context,
    }
    return templates.TemplateResponse(
        request,
        f"{page}.html",
        {
            "page": page,
            "navigation": NAVIGATION,
            "config": config,
            "modules": MODULES[page],
            "prefetch": prefetch or [],
        },
    )


# --- what a page asks the API for first, asked for before its modules have loaded -----------
# base.html fetches these paths at once and api.js's getJson takes the answer of the same path:
# the requests travel while the scripts load instead of after. Each path must be the string the
# page's module builds; one that differs is only fetched twice, never answered wrongly.

_PLAIN_NUMBER = re.compile(r"[0-9]{1,9}")


def _form_value(value: str) -> str:
    """As URLSearchParams writes a value (space as +, all but [A-Za-z0-9*-._] escaped)."""
    return quote(value, safe="*-._ ").replace(" ", "+")


def jobs_page_requests(query: dict[str, str]) -> list[str]:
    """jobs.js: readState() and queryString() for GET /jobs, and its lookups."""
    lookups = ["/datasets?limit=500", "/architectures", "/hyperparameters"]
    limit, offset = query.get("limit", ""), query.get("offset", "")
    if any(value and not _PLAIN_NUMBER.fullmatch(value) for value in (limit, offset)):
        return lookups  # Number() of it is for the page to work out
    state = {
        "status": query.get("status", ""),
        "architecture": query.get("architecture", ""),
        "dataset_id": query.get("dataset_id", ""),
        "sort": query.get("sort") or "-id",
        "limit": str(int(limit) or 50) if limit else "50",
        "offset": str(int(offset)) if offset else "0",
    }
    listing = "&".join(f"{key}={_form_value(value)}" for key, value in state.items() if value)
    return [f"/jobs?{listing}", *lookups]


def compare_page_requests(query: dict[str, str]) -> list[str]:
    """compare.js's load(): GET /compare and GET /compare/metrics of the jobs in the address."""
    ids = ",".join(part.strip() for part in query.get("jobs", "").split(",") if part.strip())
    if not ids:
        return []
    baseline = query.get("baseline", "")
    return [
        f"/compare?jobs={ids}" + (f"&baseline={baseline}" if baseline else ""),
        f"/compare/metrics?jobs={ids}",
    ]


@root_router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    prefetch = jobs_page_requests(dict(request.query_params))
    return _page(request, settings, "jobs", prefetch=prefetch)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, settings: SettingsDep, job_id: int) -> HTMLResponse:
    return _page(request, settings, "job", job_id=job_id)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    prefetch = compare_page_requests(dict(request.query_params))
    return _page(request, settings, "compare", prefetch=prefetch)


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _page(request, settings, "datasets")


@router.get("/predict", response_class=HTMLResponse)
def predict_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _page(request, settings, "predict")


def install_ui(app: FastAPI) -> None:
    app.include_router(root_router)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
