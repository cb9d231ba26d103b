"""Code as it is in `models/`: a class, function or method cut from the source file by line range.

The report shows a modification's implementation from the file itself, never retyped, so it
cannot drift from the code that trained. The file is found and parsed, not imported: `models`
imports torch, and analysis stays torch-free.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Excerpt:
    path: str  # relative to the package's parent, e.g. "models/layers.py"
    name: str  # "SEModule", "BasicBlock.forward"
    first_line: int
    last_line: int
    code: str


def package_dir(package: str) -> Path:
    """Where `package` lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"package {package!r} not found")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def excerpt(reference: str) -> Excerpt:
    """`reference` is "models/layers.py:SEModule" or "models/resnet.py:BasicBlock.forward"."""
    relative, name = reference.split(":")
    package, _, file_name = relative.partition("/")
    source = (package_dir(package) / file_name).read_text(encoding="utf-8")
    node = _find(ast.parse(source), name.split("."))
    if not isinstance(node, ast.stmt):
        raise LookupError(f"{name} not found in {relative}")
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    lines = source.splitlines()[first - 1 : node.end_lineno]
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    code = "\n".join(line[indent:] for line in lines)
    return Excerpt(relative, name, first, node.end_lineno or first, code)


def _find(tree: ast.AST, path: list[str]) -> ast.AST | None:
    """The class, function or assignment named by `path` (a dotted name split), or None."""
    for node in getattr(tree, "body", []):
        if _name_of(node) == path[0]:
            return node if len(path) == 1 else _find(node, path[1:])
    return None


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None
