"""Every error leaves the API as JSON: {"detail": message, "field": dotted.path | null}."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.specs import SpecError


class ApiError(HTTPException):
    """An error the client can act on: status, message, and the field it concerns."""

    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.field = field


def error_body(message: str, field: str | None = None, **extra: object) -> dict[str, object]:
    return {"detail": message, "field": field, **extra}


def _location(loc: tuple[object, ...] | list[object]) -> str:
    # Drop the "body"/"query" prefix FastAPI adds: users think in their own field names.
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "form", "file"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": _location(err["loc"]), "message": err["msg"]} for err in exc.errors()]
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    if first["message"].startswith("JSON decode error"):
        first = {"field": "body", "message": "request body is not valid JSON"}
    message = f"{first['field']}: {first['message']}"
    return JSONResponse(status_code=422, content=error_body(message, first["field"], errors=errors))


async def _spec_error(_: Request, exc: SpecError) -> JSONResponse:
    return JSONResponse(status_code=422, content=error_body(str(exc), exc.field))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    field = getattr(exc, "field", None)
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(str(exc.detail), field),
        headers=getattr(exc, "headers", None),
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(SpecError, _spec_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
