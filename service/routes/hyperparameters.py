"""How a job can be trained: the hyperparameters' JSON schema and the presets' values.

The dashboard builds its new-job form from this, so the form never drifts from what
`POST /jobs` validates.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from core.specs import DEFAULT_PRESET, PRESETS, Hyperparameters

router = APIRouter(prefix="/hyperparameters", tags=["jobs"])


class HyperparametersSchema(BaseModel):
    json_schema: dict[str, Any] = Field(
        alias="schema", description="JSON schema of `hyperparameters` in POST /jobs"
    )
    presets: dict[str, dict[str, Any]] = Field(description="every preset's full values")
    default_preset: str


@router.get("", response_model=HyperparametersSchema, response_model_by_alias=True)
def hyperparameters_schema() -> HyperparametersSchema:
    return HyperparametersSchema(
        schema=Hyperparameters.model_json_schema(),
        presets={name: values.model_dump() for name, values in PRESETS.items()},
        default_preset=DEFAULT_PRESET,
    )
