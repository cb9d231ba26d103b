"""The networks a job can train, with their size and cost."""

from __future__ import annotations

from functools import cache
from typing import Annotated

from fastapi import APIRouter, Query

import models
from core.specs import RowOffset
from service.schemas import ArchitecturePublic, ArchitecturesPublic

router = APIRouter(prefix="/architectures", tags=["architectures"])


@router.get("", response_model=ArchitecturesPublic)
def list_architectures(
    offset: RowOffset = 0, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> ArchitecturesPublic:
    every = all_architectures()
    return ArchitecturesPublic(data=every[offset : offset + limit], count=len(every))


@cache
def all_architectures() -> list[ArchitecturePublic]:
    """Built once per process: counting FLOPs builds every network, seconds of CPU that no
    client should be able to make the API spend again and again."""
    options_schema = models.ModelOptions.model_json_schema()
    return [
        ArchitecturePublic(**models.architecture_summary(name), options=options_schema)
        for name in models.ARCHITECTURES
    ]
