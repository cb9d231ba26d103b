"""Dependencies shared by the routers, as Annotated aliases so signatures read as plain types."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from core.db import open_session
from core.errors import Unauthorized
from core.settings import Settings, get_settings


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


def require_token(
    settings: SettingsDep, authorization: Annotated[str | None, Header()] = None
) -> None:
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


TokenDep = Depends(require_token)
