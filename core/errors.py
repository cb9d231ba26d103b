"""The errors a user can act on: which field, what was wrong, and (for the API) which status.

Every such error is a `UserError`; its kind (subclass) fixes the HTTP status, so the API turns
any of them into `{"detail": message, "field": field}` with one handler, and the CLI prints the
message and exits non-zero. Code below the API raises these instead of HTTP exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError


class UserError(ValueError):
    """Input the user must fix. `str(error)` is the whole message; `field` a dotted path.

    A kind names its HTTP status in its class line: `class NotFound(UserError, status_code=404)`;
    a kind that names none keeps its parent's."""

    status_code: ClassVar[int] = 422

    def __init_subclass__(cls, status_code: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status_code is not None:
            cls.status_code = status_code

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @property
    def detail(self) -> str:
        return str(self)


class InvalidInput(UserError):
    """A value the request or command line got wrong (422)."""


class SpecError(InvalidInput):
    """A bad value at a known place: `field` is its dotted path, `message` what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field)
        self.message = message


class BadRequest(UserError, status_code=400):
    """A request the server cannot parse: malformed upload, unexpected form field."""


class Unauthorized(UserError, status_code=401):
    """No bearer token, or one the server does not know."""


class Forbidden(UserError, status_code=403):
    """Understood and authenticated, but not allowed."""


class NotFound(UserError, status_code=404):
    """An id or name that names nothing (a job, a dataset, a search, a file)."""


class Conflict(UserError, status_code=409):
    """Valid, but not now: the resource is in the wrong state."""


class PayloadTooLarge(UserError, status_code=413):
    """A body, archive or image over one of the size limits."""


class UnsupportedMediaType(UserError, status_code=415):
    """A content type the endpoint does not take."""


class Unavailable(UserError, status_code=503):
    """A service the request needs (the broker, the database) is down: try again later."""


# Where FastAPI puts a value; users think in their own field names, not "body.x".
_LOCATIONS = {"body", "query", "path", "header", "form", "file"}


def error_location(loc: Sequence[object], prefix: str = "", strip_source: bool = False) -> str:
    """A pydantic location as a dotted path, optionally under `prefix`."""
    parts = [str(part) for part in loc]
    if strip_source and parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(p for p in (prefix, *parts) if p) or prefix or "body"


def first_error(
    errors: Sequence[Mapping[str, Any]], prefix: str = "", strip_source: bool = False
) -> SpecError:
    """The first of pydantic's errors as a SpecError whose field is a dotted path."""
    if not errors:
        return SpecError(prefix or "body", "invalid input")
    first = errors[0]
    message = str(first["msg"])
    if message.startswith("JSON decode error"):
        return SpecError("body", "request body is not valid JSON")
    return SpecError(error_location(first["loc"], prefix, strip_source), message)


def from_validation_error(exc: ValidationError, prefix: str = "") -> SpecError:
    return first_error(exc.errors(), prefix)


def architecture_error(
    field: str, message: str, *, weights_in_hyperparameters: bool = False
) -> SpecError:
    """An architecture problem reported by `models` (ModelConfigError's field and message),
    named by where it sits in a job: the name, an option, or the pretrained weights file
    (an option, or a hyperparameter when the job set it there)."""
    if field == "name":
        path = "architecture.name"
    elif field == "pretrained_weights" and weights_in_hyperparameters:
        path = "hyperparameters.pretrained_weights"
    else:
        path = f"architecture.options.{field}"
    return SpecError(path, message)
