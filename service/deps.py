"""Dependencies shared by the routers, as Annotated aliases so signatures read as plain types."""

from __future__ import annotations

import inspect
import re
import secrets
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from core import repository as repo
from core.db import open_session
from core.errors import Unauthorized, UserError
from core.settings import Settings, get_settings
from core.specs import RowId
from core.tables import Dataset, Job, Search
from service.errors import error_body
from service.model_server import ModelServer
from service.openapi import BEARER, path_pattern


async def current_settings() -> Settings:
    """The process's settings. Async, so FastAPI does not send a cached lookup to a thread."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(current_settings)]


async def app_settings(app: FastAPI) -> Settings:
    """The settings as the app's routes see them, for code outside a request (middleware,
    lifespan): tests swap them through `app.dependency_overrides`."""
    provider = app.dependency_overrides.get(current_settings, current_settings)
    settings = provider()
    return await settings if inspect.isawaitable(settings) else settings


def get_session(settings: SettingsDep) -> Iterator[Session]:
    session = open_session(settings.database)
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def job_or_404(job_id: RowId, session: SessionDep) -> Job:
    return repo.require_job(session=session, job_id=job_id)


def dataset_or_404(dataset_id: RowId, session: SessionDep) -> Dataset:
    return repo.require_dataset(session=session, dataset_id=dataset_id)


def search_or_404(search_id: RowId, session: SessionDep) -> Search:
    return repo.require_search(session=session, search_id=search_id)


# The resource a path's id names, or 404 naming the id: one rule per resource.
JobDep = Annotated[Job, Depends(job_or_404)]
DatasetDep = Annotated[Dataset, Depends(dataset_or_404)]
SearchDep = Annotated[Search, Depends(search_or_404)]


async def get_model_server(request: Request) -> ModelServer:
    """The app's model server, built in its lifespan (`service.app`)."""
    server: ModelServer = request.app.state.model_server
    return server


ModelServerDep = Annotated[ModelServer, Depends(get_model_server)]


bearer_scheme = HTTPBearer(
    scheme_name=BEARER,
    auto_error=False,
    description="one of FOODLAB_API_TOKENS; needed by every mutating endpoint once tokens are set",
)


def check_token(settings: Settings, authorization: str | None) -> None:
    """Mutating endpoints need `Authorization: Bearer <token>` once tokens are configured."""
    tokens = settings.tokens
    if not tokens:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'", "authorization"
        )
    if not any(secrets.compare_digest(token, known) for known in tokens):
        raise Unauthorized("invalid bearer token", "authorization")


def require_token(
    settings: SettingsDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """The token check as a dependency: it marks the route as protected (and in the OpenAPI
    document); `TokenGate` runs the same check before the body is read."""
    check_token(settings, authorization)


TokenDep = Depends(require_token)


class TokenGate:
    """ASGI middleware: a protected route's token is checked before its body is read, so an
    unauthenticated client can neither fill the disk nor learn how its body would validate.

    Protected operations are those the OpenAPI document marks with the bearer scheme (every
    route depending on `require_token`), so the document and the gate cannot disagree.
    """

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._protected_operations: list[tuple[str, re.Pattern[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = await self._settings()
        scope.setdefault("state", {})["settings"] = settings  # for the error handlers
        if self._protected(scope["method"], scope["path"]):
            headers = Headers(scope=scope)
            try:
                check_token(settings, headers.get("authorization"))
            except UserError as exc:
                body = error_body(exc.detail, exc.field, settings)
                response = JSONResponse(body, status_code=exc.status_code)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _protected(self, method: str, path: str) -> bool:
        if self._protected_operations is None:
            self._protected_operations = protected_operations(self.fastapi_app.openapi())
        return any(
            method == verb and pattern.fullmatch(path)
            for verb, pattern in self._protected_operations
        )

    async def _settings(self) -> Settings:
        return await app_settings(self.fastapi_app)


def protected_operations(openapi: dict[str, Any]) -> list[tuple[str, re.Pattern[str]]]:
    """(METHOD, path pattern) of every operation that requires the bearer token."""
    operations = []
    for path, item in openapi.get("paths", {}).items():
        pattern = path_pattern(path)
        for method, operation in item.items():
            if any(BEARER in requirement for requirement in operation.get("security", [])):
                operations.append((method.upper(), pattern))
    return operations
