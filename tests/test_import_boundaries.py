"""Imports go one way: core has no torch, the API never loads training code, nobody imports
the service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return {name.split(".")[0] for name in result.stdout.split()}


def test_core_imports_no_torch_and_nothing_of_ours_above_it() -> None:
    statement = (
        "import importlib, pkgutil, core; "
        "[importlib.import_module('core.' + m.name) "
        "for m in pkgutil.iter_modules(core.__path__)]"
    )
    loaded = loaded_after(statement)
    assert not loaded & {"torch", "torchvision", "models", "workers", "service", "cli"}


def test_the_api_does_not_load_training_code() -> None:
    assert not loaded_after("import service.app") & {"workers", "cli"}


def test_nothing_imports_the_service() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in ("core", "models", "workers", "cli")
        for path in (REPO / package).rglob("*.py")
        if any(line.startswith(("import service", "from service"))
               for line in path.read_text().splitlines())
    ]
    assert offenders == []
