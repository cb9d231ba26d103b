"""bench/recipe_parts.py: variants parse into overrides the preset validates, and the table
compares each variant with the baseline over the seeds both ran; bench/recipe.py --reuse
keeps an earlier run's other kinds, and a same-time run counts only what it reached within the
script's time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.recipe import best_within, earlier_runs, epoch_ends, summary
from bench.recipe_parts import BASELINE, markdown, overrides_of
from core.specs import resolve_hyperparameters


def test_variants_parse_into_overrides_the_preset_converts():
    overrides = overrides_of("lr=0.05 grad_clip=null scheduler=none")
    assert overrides == {"lr": "0.05", "grad_clip": None, "scheduler": "none"}
    hp = resolve_hyperparameters("recommended", overrides, from_text=True)
    assert (hp.lr, hp.grad_clip, hp.scheduler) == (0.05, None, "none")
    assert overrides_of(BASELINE) == {}
    with pytest.raises(SystemExit, match="field=value"):
        overrides_of("lr 0.05")


def _run(variant: str, seed: int, best: float) -> dict:
    return {
        "variant": variant,
        "seed": seed,
        "best_val_accuracy": best,
        "test_accuracy": None,
        "seconds": 100.0,
    }


def test_the_table_compares_with_the_baseline_over_shared_seeds_only():
    runs = [
        _run(BASELINE, 0, 0.50),
        _run(BASELINE, 1, 0.60),
        _run("lr=0.05", 0, 0.56),  # seed 0 only: +6 against the baseline's seed 0
        _run("lr=0.1", 2, 0.70),  # no seed in common with the baseline
    ]
    key = {"preset": "recommended", "arch": "resnet34", "epochs": 15, "data": "photos"}
    rows = {line.split("|")[1].strip(): line for line in markdown(key, runs).splitlines()[6:]}
    assert "| +6.0 |" in rows["`lr=0.05`"]
    assert "| - |" in rows["`lr=0.1`"] and "| 70.0% |" in rows["`lr=0.1`"]
    assert "| 55.0% | 50.0 / 60.0 |" in rows[f"`{BASELINE}`"]


def test_a_rerun_of_one_kind_keeps_the_others_and_the_script_budgets(tmp_path: Path):
    earlier = {
        "context": {"seeds": [0, 1]},
        "runs": {
            "script": [{"seconds": 300.0}, {"seconds": 320.0}],
            "same_time": [{"epochs": 22}, {"epochs": 23}],
            "epochs15": [{"epochs": 15}, {"epochs": 15}],
            "plain15": [],
        },
    }
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(earlier))
    kept = earlier_runs(path, ["same_time"])
    assert set(kept) == {"script", "epochs15", "plain15"}
    assert kept["script"][1] == {"seconds": 320.0} and kept["plain15"] == {}
    assert set(earlier_runs(path, ["script", "same_time"])) == {"epochs15", "plain15"}


def test_a_same_time_run_counts_only_the_epochs_that_ended_within_the_budget():
    run = {
        "val_accuracy": [0.30, 0.55, 0.50, 0.60],
        "epoch_ends": [50.0, 100.0, 150.0, 201.0],  # the last epoch overran a 200 s budget
        "best_val_accuracy": 0.60,
        "seconds": 205.0,
        "epochs": 4,
    }
    assert best_within(run, 200.0) == 0.55
    assert best_within(run, 201.0) == 0.60
    assert best_within(run, 40.0) is None
    on_time = run | {"best_val_within_budget": best_within(run, 200.0)}
    late = run | {"best_val_within_budget": best_within(run, 40.0)}  # nothing in time: 0
    stats = summary([on_time, late])
    assert stats is not None and stats["within_budget_mean"] == pytest.approx(0.275)
    assert stats["mean"] == pytest.approx(0.60)
    assert summary([run])["within_budget_mean"] is None  # type: ignore[index]  # older files


def test_a_run_recorded_without_epoch_ends_counts_only_epochs_that_surely_ended_in_time():
    # 205 s in all, 48 s per epoch: epoch k ended at the latest 205 s less the later epochs.
    run = {"val_accuracy": [0.30, 0.55, 0.50, 0.60], "seconds": 205.0, "epoch_seconds": [48.0] * 4}
    assert epoch_ends(run) == [61.0, 109.0, 157.0, 205.0]
    assert best_within(run, 200.0) == 0.55
