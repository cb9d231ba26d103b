"""Dashboard pages: Jinja2 templates that load ES modules; every number comes from the JSON API.

No build step and no CDN: the scripts, styles and the charting library (uPlot, vendored with
its licence under static/vendor/) are served from the package itself.
"""

from __future__ import annotations

from pathlib import Path

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


def _page(request: Request, settings: SettingsDep, page: str, **context: object) -> HTMLResponse:
    config = {
        "tokens_required": bool(settings.tokens),
        "register_enabled": settings.datasets_root is not None,
        "statuses": [status.value for status in JobStatus],
        **context,
    }
    return templates.TemplateResponse(
        request,
        f"{page}.html",
        {"page": page, "navigation": NAVIGATION, "config": config, "modules": MODULES[page]},
    )


@root_router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _page(request, settings, "jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, settings: SettingsDep, job_id: int) -> HTMLResponse:
    return _page(request, settings, "job", job_id=job_id)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    return _page(request, settings, "compare")


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
