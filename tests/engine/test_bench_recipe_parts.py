"""bench/recipe_parts.py: variants parse into overrides the preset validates, and the table
compares each variant with the baseline over the seeds both ran."""

from __future__ import annotations

import pytest

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
