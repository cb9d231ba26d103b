"""Helpers of the read-path tests: capture the SQL a code path runs, and read its query plans."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event


@contextmanager
def captured_sql(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every statement sent to the database while the block runs, with its parameters."""
    statements: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def reads(statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(sql, args) for sql, args in statements if sql.lstrip().upper().startswith("SELECT")]


def count_statements(engine: Engine, action: Callable[[], object]) -> int:
    with captured_sql(engine) as statements:
        action()
    return len(statements)


def plan(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The plan of one statement as lines: SQLite's EXPLAIN QUERY PLAN details, or one line per
    PostgreSQL plan node, "<node type> <relation> <index>"."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            return [row[-1] for row in cursor.fetchall()]
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        document = cursor.fetchone()[0]
        document = json.loads(document) if isinstance(document, str) else document
        return list(_pg_nodes(document[0]["Plan"]))
    finally:
        raw.close()


def _pg_nodes(node: dict[str, Any]) -> Iterator[str]:
    parts = [node["Node Type"], node.get("Relation Name", ""), node.get("Index Name", "")]
    yield " ".join(part for part in parts if part)
    for child in node.get("Plans", []):
        yield from _pg_nodes(child)


def table_scans_of_jobs(engine: Engine, lines: list[str]) -> list[str]:
    """Plan lines that read the `jobs` table itself from end to end."""
    if engine.dialect.name == "sqlite":
        # "SCAN jobs" alone is the table; "SCAN jobs USING ... INDEX" walks an index.
        return [line for line in lines if line.strip() == "SCAN jobs"]
    return [line for line in lines if line.startswith("Seq Scan jobs")]


def sorts(engine: Engine, lines: list[str]) -> list[str]:
    """Plan lines that sort: every matching row is read before the first one is returned."""
    marker = "TEMP B-TREE" if engine.dialect.name == "sqlite" else "Sort"
    return [line for line in lines if line == marker or (marker in line and "USE" in line)]
