"""`foodlab study --tune N`: each network at its tuned best, against its untuned preset.

For every architecture a search of N trials over one space with one budget (the study's
epochs, the same split and held-out test part); then the best configuration of each, and the
untuned preset, trained with `--repeats` seeds. The report compares the networks on test
accuracy (mean ± std over seeds) and shows, per network, tuned against untuned, so a gap can be
told to come from the architecture or from the recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from analysis.compare import Comparison
from analysis.i18n import N_
from analysis.report import TuningRow
from analysis.study import Backend, StudyError, StudyPlan
from core.datasets import DatasetError

TUNED_TITLE = N_("Tuned architecture study")

# The same space for every network, so each gets the same tuning budget.
DEFAULT_SPACE: dict[str, Any] = {
    "lr": {"low": 0.005, "high": 0.2, "log": True},
    "weight_decay": {"low": 1e-5, "high": 1e-3, "log": True},
}


class SearchBackend(Backend, Protocol):
    """A study backend that also runs searches (POST /searches, or in this process)."""

    def create_search(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def run_search(self, search_id: int) -> None: ...

    def search_detail(self, search_id: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TunedArchitecture:
    architecture: str
    search_id: int
    trials: int
    best_params: dict[str, Any]
    best_value: float
    tuned_ids: list[int]
    untuned_ids: list[int]


def search_body(
    dataset_id: int,
    architecture: str,
    plan: StudyPlan,
    n_trials: int,
    space: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "architecture": {"name": architecture},
        "preset": plan.preset,
        "hyperparameters": plan.overrides,
        "space": space or DEFAULT_SPACE,
        "n_trials": n_trials,
        "max_parallel": 2,
        "objective": "val_accuracy",
        "pruner": "median",
        "sampler": "tpe",
        "seed": int(plan.overrides.get("seed", 0)),
    }


def tune(
    backend: SearchBackend,
    plan: StudyPlan,
    data: Path,
    n_trials: int,
    wait: Callable[[dict[str, int]], dict[str, dict[str, Any]]],
) -> list[TunedArchitecture]:
    """Search each architecture, then submit its tuned and untuned repeats (not yet run).

    `wait` follows the searches to their end and returns each one's detail by architecture.
    """
    try:
        dataset_id = backend.register_dataset(data)
    except DatasetError as exc:
        raise StudyError(f"--data: {exc}", 2) from None
    searches = {
        arch: backend.create_search(search_body(dataset_id, arch, plan, n_trials))["id"]
        for arch in plan.architectures
    }
    details = wait(searches)
    tuned = []
    for arch, detail in details.items():
        best = detail.get("best_trial")
        if best is None:
            raise StudyError(
                f"search {searches[arch]} ({arch}): no trial completed; see its "
                "trials' jobs for errors"
            )
        fixed = dict(detail["hyperparameters"])
        tuned.append(
            TunedArchitecture(
                architecture=arch,
                search_id=searches[arch],
                trials=len(detail["trials"]),
                best_params=best["params"],
                best_value=best["value"],
                tuned_ids=backend.submit(
                    dataset_id, arch, _plan(plan, arch, fixed | best["params"])
                ),
                untuned_ids=backend.submit(dataset_id, arch, _plan(plan, arch, fixed)),
            )
        )
    return tuned


def _plan(plan: StudyPlan, architecture: str, hyperparameters: dict[str, Any]) -> StudyPlan:
    return StudyPlan([architecture], plan.preset, hyperparameters, plan.repeats)


def job_labels(tuned: Sequence[TunedArchitecture]) -> dict[int, str]:
    labels = {}
    for entry in tuned:
        for kind, ids in (("tuned", entry.tuned_ids), ("untuned", entry.untuned_ids)):
            for index, job_id in enumerate(ids):
                labels[job_id] = f"job {job_id} {entry.architecture} {kind} #{index + 1}"
    return labels


def tuning_rows(
    tuned: Sequence[TunedArchitecture], tuned_comparison: Comparison, untuned_comparison: Comparison
) -> list[TuningRow]:
    """Per network: the search's best and the seeds' test and validation accuracy."""

    def stats(comparison: Comparison, ids: list[int]) -> dict[str, Any]:
        group = next(g for g in comparison.groups if ids[0] in g.job_ids)
        return group.stats

    return [
        TuningRow(
            architecture=entry.architecture,
            search_id=entry.search_id,
            trials=entry.trials,
            best_params=entry.best_params,
            search_value=entry.best_value,
            tuned=stats(tuned_comparison, entry.tuned_ids),
            untuned=stats(untuned_comparison, entry.untuned_ids),
        )
        for entry in tuned
    ]
