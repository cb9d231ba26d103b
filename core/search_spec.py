"""What a hyperparameter search is asked for, validated against the hyperparameter schema.

Torch-free and Optuna-free: the API, the CLI and the workers validate a request the same way,
and every error names the field (`space.lr.low`, `sampler`, ...).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import SpecError
from core.specs import ArchitectureSpec, Hyperparameters, RowId, resolve_hyperparameters

Objective = Literal["val_accuracy", "val_loss"]
PrunerName = Literal["none", "median", "successive_halving", "hyperband"]
SamplerName = Literal["tpe", "random", "grid"]

# A search compares configurations under one budget on one split, scored on one test part.
FIXED_FOR_A_SEARCH = frozenset(
    {
        "epochs",
        "seed",
        "split_seed",
        "val_fraction",
        "test_fraction",
        "device",
        "num_workers",
        "compile",
        "pretrained_weights",
        "eval_batch_size",
    }
)
SEARCH_TEST_FRACTION = 0.15  # when neither the preset nor the request holds images out


class Range(BaseModel):
    """A numeric range; integer for integer hyperparameters, float otherwise."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)


class SearchRequest(BaseModel):
    """POST /searches: a search of `n_trials` jobs over `space`, the rest fixed."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: RowId = Field(..., strict=True)
    architecture: ArchitectureSpec
    preset: str = Field("recommended", description="the hyperparameters not searched start here")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="fixed overrides on top of the preset (e.g. epochs)"
    )
    space: dict[str, Range | list[Any]] = Field(
        ...,
        min_length=1,
        examples=[{"lr": {"low": 1e-3, "high": 0.2, "log": True}, "optimizer": ["sgd", "adamw"]}],
    )
    n_trials: int = Field(10, ge=1, le=1000)
    max_parallel: int = Field(2, ge=1, le=64, description="trials queued or running at once")
    objective: Objective = Field("val_accuracy", description="maximised; val_loss is minimised")
    pruner: PrunerName = "median"
    sampler: SamplerName = "tpe"
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="the sampler's seed")


def fixed_hyperparameters(request: SearchRequest) -> Hyperparameters:
    """Preset + fixed overrides; a search always holds out a test part."""
    fixed = dict(request.hyperparameters)
    if fixed.get("test_fraction") == 0:
        raise SpecError(
            "hyperparameters.test_fraction",
            "a search holds out a test part; give a fraction above 0",
        )
    hyper = resolve_hyperparameters(request.preset, fixed)
    if hyper.test_fraction == 0:
        hyper = resolve_hyperparameters(
            request.preset, fixed | {"test_fraction": SEARCH_TEST_FRACTION}
        )
    return hyper


def normalised_space(request: SearchRequest, fixed: Hyperparameters) -> dict[str, dict]:
    """Each entry as {"kind": "float"|"int"|"choice", ...}, every bound and choice checked by
    the hyperparameter schema on top of the fixed values."""
    space = {}
    for name, entry in request.space.items():
        field = f"space.{name}"
        if name not in Hyperparameters.model_fields:
            searchable = sorted(set(Hyperparameters.model_fields) - FIXED_FOR_A_SEARCH)
            raise SpecError(field, f"not a hyperparameter; searchable: {', '.join(searchable)}")
        if name in FIXED_FOR_A_SEARCH:
            raise SpecError(
                field,
                "fixed for a search (budget, split, seed or device); set it in hyperparameters",
            )
        if isinstance(entry, Range):
            space[name] = _range(name, entry, fixed, field)
        else:
            space[name] = _choices(name, entry, fixed, field)
    if request.sampler == "grid" and any(e["kind"] != "choice" for e in space.values()):
        raise SpecError("sampler", "grid needs every entry of space to be a list of choices")
    return space


def _range(name: str, entry: Range, fixed: Hyperparameters, field: str) -> dict:
    kind = _numeric_kind(name)
    if kind is None:
        raise SpecError(field, "not numeric; give a list of choices")
    if entry.high <= entry.low:
        raise SpecError(f"{field}.high", "must be greater than low")
    if entry.log and entry.low <= 0:
        raise SpecError(f"{field}.low", "must be above 0 on a log scale")
    if entry.log and entry.step is not None:
        raise SpecError(f"{field}.step", "a log-scale range takes no step")
    cast = int if kind == "int" else float
    for bound in ("low", "high"):
        value = getattr(entry, bound)
        if kind == "int" and value != int(value):
            raise SpecError(f"{field}.{bound}", "must be a whole number")
        _check_value(name, cast(value), fixed, f"{field}.{bound}")
    step = None if entry.step is None else cast(entry.step)
    return {
        "kind": kind,
        "low": cast(entry.low),
        "high": cast(entry.high),
        "log": entry.log,
        "step": step,
    }


def _choices(name: str, entry: list[Any], fixed: Hyperparameters, field: str) -> dict:
    if not entry:
        raise SpecError(field, "needs at least one choice")
    for index, value in enumerate(entry):
        _check_value(name, value, fixed, f"{field}.{index}")
    return {"kind": "choice", "choices": list(entry)}


def _numeric_kind(name: str) -> str | None:
    annotation = Hyperparameters.model_fields[name].annotation
    types = set(get_args(annotation)) - {type(None)} or {annotation}
    if types == {int}:
        return "int"
    if types <= {int, float}:
        return "float"
    return None


def _check_value(name: str, value: Any, fixed: Hyperparameters, field: str) -> None:
    try:
        Hyperparameters.model_validate(fixed.model_dump() | {name: value})
    except ValidationError as exc:
        raise SpecError(field, str(exc.errors()[0]["msg"])) from None


def sampled_hyperparameters(fixed: dict[str, Any], params: dict[str, Any]) -> Hyperparameters:
    """A trial's hyperparameters; raises SpecError when a combination breaks a cross-field rule
    (e.g. nesterov with momentum 0)."""
    try:
        return Hyperparameters.model_validate(fixed | params)
    except ValidationError as exc:
        raise SpecError("space", f"sampled {params}: {exc.errors()[0]['msg']}") from None
