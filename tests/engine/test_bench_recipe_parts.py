"""bench/recipe_parts.py: variants parse into overrides the preset validates, and the table
compares each variant with the baseline over the seeds both ran; bench/recipe.py --reuse
keeps an earlier run's other kinds, and a same-time run counts only what it reached within the
script's time."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest

from bench.recipe import (
    best_within,
    earlier_runs,
    epoch_ends,
    paired_gain,
    runs_to_do,
    seeds_to_report,
    summary,
)
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


def _earlier_file(tmp_path: Path) -> Path:
    """A results file of seeds 0 and 1, written before runs named their seed."""
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
    return path


def test_a_rerun_of_one_kind_keeps_the_others_and_the_script_budgets(tmp_path: Path):
    earlier = earlier_runs(_earlier_file(tmp_path))
    assert earlier["script"][1] == {"seconds": 320.0} and earlier["plain15"] == {}
    args = Namespace(seeds=[0, 1], runs=["same_time"])
    fresh, kept = runs_to_do(1, args, earlier)
    assert fresh == ["same_time"] and set(kept) == {"script", "epochs15"}
    assert kept["script"] == {"seconds": 320.0}


def test_new_seeds_extend_an_earlier_file_and_keep_its_seeds_runs(tmp_path: Path):
    earlier = earlier_runs(_earlier_file(tmp_path))
    args = Namespace(seeds=[2, 3], runs=["script", "same_time"])
    assert seeds_to_report(args.seeds, earlier) == [0, 1, 2, 3]
    fresh, kept = runs_to_do(0, args, earlier)  # an earlier seed: all its runs kept
    assert fresh == [] and set(kept) == {"script", "same_time", "epochs15"}
    fresh, kept = runs_to_do(3, args, earlier)  # a new seed: only what is asked for
    assert fresh == ["script", "same_time"] and kept == {}


def test_checks_pair_each_seed_with_the_same_seed_of_the_other_kind():
    script = [{"seed": s, "best_val_accuracy": a} for s, a in [(0, 0.50), (1, 0.56), (2, 0.44)]]
    # Same-time runs score what they reached in time; seed 2 reached nothing in time.
    same_time = [
        {"seed": 0, "best_val_accuracy": 0.62, "best_val_within_budget": 0.60},
        {"seed": 2, "best_val_accuracy": 0.58, "best_val_within_budget": None},
    ]
    epochs15 = [{"seed": 1, "best_val_accuracy": 0.57}]  # an older run: no within-budget key
    assert paired_gain(same_time, script) == pytest.approx(((0.60 - 0.50) + (0.0 - 0.44)) / 2)
    assert paired_gain(epochs15, script) == pytest.approx(0.01)
    assert paired_gain(epochs15, same_time) is None  # no seed in common


def test_a_same_time_run_counts_only_the_epochs_that_ended_within_the_budget():
    run = {
        "seed": 0,
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
