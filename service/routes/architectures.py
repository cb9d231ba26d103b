"""The networks a job can train, with their size and cost."""

from __future__ import annotations

from fastapi import APIRouter

import models
from service.schemas import ArchitecturePublic, ArchitecturesPublic

router = APIRouter(prefix="/architectures", tags=["architectures"])


@router.get("", response_model=ArchitecturesPublic)
def list_architectures() -> ArchitecturesPublic:
    options_schema = models.ModelOptions.model_json_schema()
    data = [
        ArchitecturePublic(**models.architecture_summary(name), options=options_schema)
        for name in models.ARCHITECTURES
    ]
    return ArchitecturesPublic(data=data, count=len(data))
