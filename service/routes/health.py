"""Liveness (the process answers) and readiness (database and broker reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from core.queue import get_celery
from service.deps import SessionDep, SettingsDep

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    status: str = Field(description="ready or not ready")
    checks: dict[str, str] = Field(description="per dependency: ok, or the error")


class Liveness(BaseModel):
    status: str


@router.get("/healthz", response_model=Liveness)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "the database or the broker is unreachable"}
    },
)
def readyz(session: SessionDep, settings: SettingsDep) -> JSONResponse:
    checks = {
        "database": _check(lambda: session.execute(text("SELECT 1"))),
        "broker": _check(lambda: _ping_broker(settings)),
    }
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "checks": checks},
    )


def _ping_broker(settings: SettingsDep) -> None:
    with get_celery(settings).connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def _check(probe: object) -> str:
    try:
        probe()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"
