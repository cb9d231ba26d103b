"""Dependencies shared by the routers, as Annotated aliases so signatures read as plain types."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Security
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from core.db import open_session
from core.errors import Unauthorized, UserError
from core.settings import Settings, get_settings
from service.errors import error_body


async def current_settings() -> Settings:
    """The process's settings. Async, so FastAPI does not send a cached lookup to a thread."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(current_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    session = open_session(settings.database)
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


bearer_scheme = HTTPBearer(
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


def is_protected(dependant: Dependant) -> bool:
    return any(
        sub.call is require_token or is_protected(sub) for sub in dependant.dependencies
    )


class TokenGate:
    """ASGI middleware: a protected route's token is checked before its body is read, so an
    unauthenticated client can neither fill the disk nor learn how its body would validate."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._protected(scope):
            headers = Headers(scope=scope)
            try:
                check_token(await self._settings(), headers.get("authorization"))
            except UserError as exc:
                body = error_body(exc.detail, exc.field)
                response = JSONResponse(body, status_code=exc.status_code)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _protected(self, scope: Scope) -> bool:
        for route in self.fastapi_app.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return isinstance(route, APIRoute) and is_protected(route.dependant)
        return False

    async def _settings(self) -> Settings:
        # Tests swap the settings through the dependency overrides; honour them here too.
        provider = self.fastapi_app.dependency_overrides.get(current_settings, current_settings)
        settings = provider()
        return await settings if inspect.isawaitable(settings) else settings
