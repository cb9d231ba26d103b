"""Hyperparameter searches: create (committed, then its first trials enqueued), list, inspect
with trials, best trial and importances, plots, cancel. The search itself is core/search.py."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select

import models
from core import search as searches
from core.db import unit_of_work
from core.queue import send_training
from core.search_spec import SearchRequest
from core.specs import RowOffset
from core.tables import Search
from service.deps import SearchDep, SessionDep, SettingsDep, TokenDep
from service.openapi import errors
from service.schemas import SearchDetail, SearchesPublic, SearchPublic

router = APIRouter(prefix="/searches", tags=["searches"])


@router.post(
    "", status_code=201, response_model=SearchPublic, dependencies=[TokenDep], responses=errors(404)
)
def create_search(
    body: SearchRequest, session: SessionDep, settings: SettingsDep, response: Response
) -> SearchPublic:
    search = searches.create_search(
        session=session,
        database_url=settings.database,
        request=body,
        canonical_options=models.canonical_options,
    )
    session.commit()
    searches.fill_search(
        unit_of_work=unit_of_work(settings.database),
        database_url=settings.database,
        search_id=search.id,
        canonical_options=models.canonical_options,
        send=lambda job_id, queue: send_training(settings, job_id, queue),
    )
    session.refresh(search)
    response.headers["Location"] = f"/searches/{search.id}"
    return SearchPublic.from_row(search)


@router.get("", response_model=SearchesPublic)
def list_searches(
    session: SessionDep, offset: RowOffset = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> SearchesPublic:
    total = session.scalar(select(func.count()).select_from(Search)) or 0
    rows = session.scalars(select(Search).order_by(Search.id.desc()).offset(offset).limit(limit))
    return SearchesPublic(data=[SearchPublic.from_row(row) for row in rows], count=total)


@router.get("/{search_id:int}", response_model=SearchDetail)
def get_search(search: SearchDep, session: SessionDep, settings: SettingsDep) -> SearchDetail:
    summary = searches.search_summary(
        session=session, database_url=settings.database, search=search
    )
    return SearchDetail(**SearchPublic.from_row(search).model_dump(), **summary)


@router.get(
    "/{search_id:int}/{kind}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}} | errors(409),
)
def search_plot(
    search: SearchDep,
    kind: Literal["history", "parallel", "importances"],
    settings: SettingsDep,
) -> Response:
    """Optimisation history, parallel coordinates or parameter importances (Optuna's plots)."""
    png = searches.search_plot(settings.database, search, kind)
    return Response(png, media_type="image/png")


@router.post(
    "/{search_id:int}/cancel",
    response_model=SearchPublic,
    dependencies=[TokenDep],
    responses=errors(409),
)
def cancel_search(search: SearchDep, session: SessionDep, settings: SettingsDep) -> SearchPublic:
    stopped = searches.cancel_search(session=session, search=search)
    session.commit()
    searches.tell_cancelled(settings.database, search, stopped)
    return SearchPublic.from_row(search)
