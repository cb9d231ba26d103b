"""Every error leaves the API as JSON: {"detail": message, "field": dotted.path | null}.

Routes and the code below them raise `core.errors.UserError` kinds (NotFound, Conflict, ...);
one handler turns any of them into its status and body.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import UserError, error_location, first_error
from core.settings import Settings, shorten
from service.openapi import allowed_methods

MAX_ERRORS_LISTED = 10


def error_body(
    message: str, field: str | None = None, settings: Settings | None = None, **extra: object
) -> dict[str, object]:
    """The error as clients get it: never an absolute server path, never a huge echo."""
    public = settings.public_text if settings is not None else _bounded
    return {
        "detail": public(message),
        "field": None if field is None else public(field, 200),
        **extra,
    }


def _bounded(text: str, limit: int = 500) -> str:
    return shorten(text, limit)


def request_settings(request: Request) -> Settings | None:
    """The settings `TokenGate` put on the request (None before it ran)."""
    return getattr(request.state, "settings", None)


async def _user_error(request: Request, exc: UserError) -> JSONResponse:
    body = error_body(exc.detail, exc.field, request_settings(request))
    return JSONResponse(status_code=exc.status_code, content=body)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    settings = request_settings(request)
    first = first_error(exc.errors(), strip_source=True)
    errors = [
        error_body(err["msg"], error_location(err["loc"], strip_source=True), settings)
        for err in exc.errors()[:MAX_ERRORS_LISTED]
    ]
    errors = [{"field": item["field"], "message": item["detail"]} for item in errors]
    body = error_body(first.detail, first.field, settings, errors=errors)
    return JSONResponse(status_code=first.status_code, content=body)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Starlette's own: unknown routes (404), wrong methods (405).
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        # Starlette names the methods of one route; a path can have several (GET, DELETE).
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(str(exc.detail), None, request_settings(request)),
        headers=headers,
    )


async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
    """The database is down or restarting: 503 and a message, not a reset connection. The
    pool pre-pings, so the first request after it is back succeeds."""
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        message = f"the database is unreachable; try again shortly ({reason})"
        return JSONResponse(
            status_code=503, content=error_body(message, "database"), headers={"Retry-After": "5"}
        )
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(UserError, _user_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _database_error)  # type: ignore[arg-type]
