"""The FastAPI application factory: routers joined once, errors as JSON."""

from __future__ import annotations

from fastapi import FastAPI

from service.deps import TokenGate
from service.errors import install_error_handlers
from service.routes import (
    architectures,
    compare,
    datasets,
    health,
    hyperparameters,
    jobs,
    models,
    predict,
    searches,
)
from service.ui.pages import install_ui


def create_app() -> FastAPI:
    app = FastAPI(
        title="foodlab",
        summary="Train, compare and serve plain and residual CNNs on food photos.",
        version="0.1.0",
    )
    install_error_handlers(app)
    app.add_middleware(TokenGate, fastapi_app=app)
    for router in (health.router, architectures.router, hyperparameters.router, datasets.router,
                   jobs.router, models.router, predict.router, compare.router, compare.jobs_router,
                   searches.router):
        app.include_router(router)
    install_ui(app)
    return app


app = create_app()
