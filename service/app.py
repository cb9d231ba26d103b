"""The FastAPI application factory: routers joined once, errors as JSON, the model server
built at startup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.deps import TokenGate, app_settings
from service.errors import install_error_handlers
from service.model_server import ModelServer
from service.openapi import install_contract
from service.routes import (
    architectures,
    compare,
    datasets,
    health,
    hyperparameters,
    jobs,
    models,
    predict,
    reports,
    searches,
)
from service.ui.pages import install_ui


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """What lives as long as the app: the model server (cache and batcher) for /predict."""
    app.state.model_server = ModelServer.from_settings(await app_settings(app))
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="foodlab",
        summary="Train, compare and serve plain and residual CNNs on food photos.",
        version="0.1.0",
    )
    install_error_handlers(app)
    install_contract(app)
    app.add_middleware(TokenGate, fastapi_app=app)
    for router in (
        health.router,
        architectures.router,
        hyperparameters.router,
        datasets.router,
        jobs.router,
        models.router,
        predict.router,
        compare.router,
        compare.jobs_router,
        reports.router,
        searches.router,
    ):
        app.include_router(router)
    install_ui(app)
    return app


app = create_app()
