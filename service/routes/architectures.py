"""The networks a job can train, with their size and cost."""

from __future__ import annotations

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
    options_schema = models.ModelOptions.model_json_schema()
    names = list(models.ARCHITECTURES)
    data = [
        ArchitecturePublic(**models.architecture_summary(name), options=options_schema)
        for name in names[offset : offset + limit]
    ]
    return ArchitecturesPublic(data=data, count=len(names))
