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


def error_body(message: str, field: str | None = None, **extra: object) -> dict[str, object]:
    return {"detail": message, "field": field, **extra}


async def _user_error(_: Request, exc: UserError) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content=error_body(exc.detail, exc.field))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = first_error(exc.errors(), strip_source=True)
    errors = [
        {"field": error_location(err["loc"], strip_source=True), "message": err["msg"]}
        for err in exc.errors()
    ]
    return JSONResponse(
        status_code=first.status_code, content=error_body(first.detail, first.field, errors=errors)
    )


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Starlette's own: unknown routes (404), wrong methods (405).
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(str(exc.detail)),
        headers=getattr(exc, "headers", None),
    )


async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
    """The database is down or restarting: 503 and a message, not a reset connection. The
    pool pre-pings, so the first request after it is back succeeds."""
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        message = f"the database is unreachable; try again shortly ({reason})"
        return JSONResponse(status_code=503, content=error_body(message, "database"),
                            headers={"Retry-After": "5"})
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(UserError, _user_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _database_error)  # type: ignore[arg-type]
