"""The OpenAPI document as the API really behaves: every error status an operation returns,
with the one error body, the bearer scheme where a token is needed, and each content type.

Routes declare their own specific statuses with `errors(404, 409)`; `install_contract` adds
what holds for every operation of a kind (401 where the token is checked, 422 where input is
validated, 503 where the database or broker is used), so no operation can forget them.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

BEARER = "bearerAuth"  # the security scheme's name in the document


def path_pattern(template: str) -> re.Pattern[str]:
    """'/jobs/{job_id}' -> a pattern matching '/jobs/12' (one segment per parameter)."""
    return re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)))


class FieldErrorPublic(BaseModel):
    field: str
    message: str


class ErrorPublic(BaseModel):
    """Every error the API returns (4xx and 503)."""

    detail: str = Field(description="what was wrong, for people")
    field: str | None = Field(description="dotted path of the input it concerns, if any")
    errors: list[FieldErrorPublic] | None = Field(
        None, description="validation errors (422): the first few, each with its field"
    )


DESCRIPTIONS = {
    400: "malformed request: multipart framing, form fields or image data",
    401: "missing or invalid bearer token",
    403: "not allowed on this server (a feature its settings disable, or a path outside it)",
    404: "no such resource",
    409: "the resource is in a state that does not allow this",
    413: "upload, or the pixels its images decode to, over the server's limit",
    415: "unsupported content type or file format",
    422: "invalid input; `field` names it",
    503: "the database or the message broker is unavailable; retry later",
}
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorPublic"}
# Operations that touch neither the database nor the broker.
NO_BACKEND = {("get", "/healthz"), ("get", "/architectures"), ("get", "/readyz")}


def errors(*statuses: int) -> dict[Any, Any]:  # Any: merges with `|` into literal dicts
    """`responses=` for a route: these statuses, each with the error body."""
    return {
        status: {"model": ErrorPublic, "description": DESCRIPTIONS[status]} for status in statuses
    }


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    }


def complete_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    if operation.get("security"):
        responses["401"] = _error_response(401)
    if operation.get("parameters") or operation.get("requestBody"):
        responses["422"] = _error_response(422)  # ours, not FastAPI's HTTPValidationError
    if operation.get("requestBody"):
        responses.setdefault("400", _error_response(400))  # a body that cannot be parsed
    if any(parameter.get("in") == "path" for parameter in operation.get("parameters", [])):
        responses.setdefault("404", _error_response(404))  # the id may name nothing
    if (method, path) not in NO_BACKEND:
        responses.setdefault("503", _error_response(503))


def add_links(paths: dict[str, Any]) -> None:
    """Link each create operation (POST /jobs -> 201 with `id`) to the operations on what it
    created (/jobs/{job_id}/...), so clients and the stateful fuzzer can follow them."""
    for path, item in paths.items():
        created = item.get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        for target, target_item in paths.items():
            parameter = re.fullmatch(re.escape(path) + r"/\{(\w+)\}(/.*)?", target)
            if parameter is None:
                continue
            for operation in target_item.values():
                created.setdefault("links", {})[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {parameter.group(1): "$response.body#/id"},
                }


def install_contract(app: FastAPI) -> None:
    """Replace `app.openapi` with the completed document, built once per route table."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = completed_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Building the document takes a third of a second; every app `create_app` makes in a process
# (the tests make hundreds) has the same routes, so they share one. Read it, never change it.
_DOCUMENTS: dict[tuple[Any, ...], dict[str, Any]] = {}


def completed_document(app: FastAPI) -> dict[str, Any]:
    # What the document says of a route follows from its path, methods and endpoint (named,
    # not by identity: FastAPI's own routes are closures made anew for each app).
    routes = tuple(
        (route.path, frozenset(route.methods or ()), route.endpoint.__module__, route.name)
        for route in app.routes
        if isinstance(route, APIRoute) and route.include_in_schema
    )
    key = (app.title, app.version, app.summary, routes)
    if key not in _DOCUMENTS:
        _DOCUMENTS[key] = _build_document(app)
    return _DOCUMENTS[key]


def _build_document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            complete_operation(method, path, operation)
    add_links(schema.get("paths", {}))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.update(_models_schema(ErrorPublic))
    schema["components"].setdefault("securitySchemes", {}).setdefault(
        BEARER, {"type": "http", "scheme": "bearer"}
    )
    return schema


def _models_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    return {model.__name__: schema, **definitions}


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the document lists for the path `path` matches (for 405's Allow)."""
    paths = app.openapi().get("paths", {})
    # A literal path (/datasets/register) is its own resource, not an id of /datasets/{id}.
    matching = (
        [paths[path]]
        if path in paths
        else [item for template, item in paths.items() if path_pattern(template).fullmatch(path)]
    )
    return sorted({method.upper() for item in matching for method in item})
