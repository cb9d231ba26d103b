"""Imports go one way (the README's Layout table): core, analysis and demo have no torch, the
API never loads training code, nobody imports the service."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> our packages it must not load (torch and torchvision are never allowed here)
TORCH_FREE = {
    "core": {"analysis", "demo", "models", "workers", "service", "cli"},
    "analysis": {"demo", "models", "workers", "service", "cli"},
    "demo": {"analysis", "models", "workers", "service", "cli"},
}

# The README's Layout table, "may import (of ours)" column.
MAY_IMPORT = {
    "models": set(),
    "core": set(),
    "analysis": {"core"},
    "demo": {"core"},
    "workers": {"core", "models"},
    "service": {"core", "analysis", "models"},
    "cli": {"core", "analysis", "demo", "models", "workers"},
    "migrations": {"core"},
}


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in result.stdout.split()}


def every_module_of(package: str) -> str:
    return (
        f"import importlib, pkgutil, {package}; "
        f"[importlib.import_module('{package}.' + m.name) "
        f"for m in pkgutil.iter_modules({package}.__path__)]"
    )


@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(TORCH_FREE))
def test_torch_free_packages_import_no_torch_and_nothing_above_them(package: str) -> None:
    loaded = loaded_after(every_module_of(package))
    assert not loaded & ({"torch", "torchvision"} | TORCH_FREE[package])


@pytest.mark.slow
def test_the_api_does_not_load_training_code() -> None:
    assert not loaded_after("import service.app") & {"workers", "cli"}


@pytest.mark.slow
def test_the_study_command_loads_no_torch_until_it_trains() -> None:
    assert not loaded_after("import cli.study") & {"torch", "workers"}


def test_nothing_imports_the_service() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in ("core", "analysis", "demo", "models", "workers", "cli")
        for path in (REPO / package).rglob("*.py")
        if any(
            line.startswith(("import service", "from service"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


def imported_packages(path: Path) -> set[str]:
    """The top-level names `path` imports (absolute imports only; ours use no relative ones)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.slow
def test_every_package_imports_only_what_the_layout_table_allows() -> None:
    ours = set(MAY_IMPORT)
    offenders = {
        str(path.relative_to(REPO)): sorted(used)
        for package, allowed in MAY_IMPORT.items()
        for path in (REPO / package).rglob("*.py")
        if (used := (imported_packages(path) & ours) - allowed - {package})
    }
    assert offenders == {}


def test_the_layout_table_names_every_package() -> None:
    readme = (REPO / "README.md").read_text()
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(MAY_IMPORT) | {"bench", "tests"}
    assert all(f"| `{name}/` |" in readme for name in MAY_IMPORT)
