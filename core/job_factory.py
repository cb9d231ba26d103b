"""The one way jobs are made: a job request becomes validated, normalised job rows.

`POST /jobs`, `foodlab study --local` and searches all call `create_jobs`, so equal
configurations are equal rows however they were asked for, and fall into one repeat group.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from core import repository as repo
from core.errors import NotFound, UserError, architecture_error
from core.queue import queue_for_device
from core.specs import ArchitectureSpec, Hyperparameters, RowId, resolve_hyperparameters
from core.tables import Job
from core.weights import check_weights

DEFAULT_PRESET = "reference"

# `models.canonical_options`: core cannot import the networks (torch), so callers pass it in.
# It validates the options of an architecture and keeps those that differ from its preset.
CanonicalOptions = Callable[[str, dict[str, Any]], dict[str, Any]]


class JobRequest(BaseModel):
    """What a user asks for: one configuration on one dataset, `repeats` times."""

    # strict: JSON `true` is not a dataset id nor a repeat count.
    model_config = ConfigDict(extra="forbid", strict=True)

    dataset_id: RowId
    architecture: ArchitectureSpec
    preset: str | None = Field(None, description="reference or recommended; default reference")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="overrides applied on top of the preset"
    )
    repeats: int = Field(1, ge=1, le=20, description="same job with seeds seed, seed+1, ...")


def create_jobs(
    *,
    session: Session,
    request: JobRequest,
    canonical_options: CanonicalOptions,
    queue: str | None = None,
    weights_root: Path | None = None,
    group_id: str | None = None,
    search_id: int | None = None,
    trial_number: int | None = None,
) -> list[Job]:
    """Validate `request` and add its job rows (seeds seed..seed+repeats-1, one group id).

    Raises a UserError naming the first bad field. `queue` defaults to the one for the
    requested device; the caller commits, then enqueues. Pretrained weights are names of
    files in `weights_root` (none allowed without it).
    files in `weights_root` (none allowed without it). A search's trial passes its search,
    trial number and the search's group.
    """
    hyper = resolve_hyperparameters(request.preset, request.hyperparameters)
    options = validated_options(request.architecture, canonical_options)
    check_weights(hyper.model_dump(), request.architecture.options, weights_root)
    if repo.get_dataset(session=session, dataset_id=request.dataset_id) is None:
        raise NotFound(f"dataset {request.dataset_id} not found", "dataset_id")
    if group_id is None and request.repeats > 1:
        group_id = str(uuid.uuid4())
    jobs = [
        Job(
            dataset_id=request.dataset_id,
            architecture=request.architecture.name,
            architecture_options=options,
            hyperparameters=_repeat(hyper, index).model_dump(),
            preset=request.preset or DEFAULT_PRESET,
            queue=queue or queue_for_device(hyper.device),
            group_id=group_id,
            repeat_index=index,
            search_id=search_id,
            trial_number=trial_number,
        )
        for index in range(request.repeats)
    ]
    return repo.add_jobs(session=session, jobs=jobs)


def _repeat(hyper: Hyperparameters, index: int) -> Hyperparameters:
    return hyper.model_copy(update={"seed": hyper.seed + index})


def validated_options(
    spec: ArchitectureSpec, canonical_options: CanonicalOptions
) -> dict[str, Any]:
    """The architecture's options as stored: validated, only what differs from its preset."""
    try:
        return canonical_options(spec.name, spec.options)
    except UserError:
        raise
    except ValueError as exc:
        # models.ModelConfigError (a ValueError with field and message; core cannot import it).
        field = getattr(exc, "field", "name")
        raise architecture_error(field, getattr(exc, "message", str(exc))) from None
