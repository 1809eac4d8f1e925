"""PostgreSQL twins of statements kept beside the modules that run them (not in queries.py), under the
same names (dialect.register_twins maps them by the SQLite text of that name). Most of those modules'
statements respell mechanically; the ones here do not."""

from __future__ import annotations

import types

from .dialect import register_twins, respell


def _without_plan_hints(sqlite_text: str, *columns: str) -> str:
    """SQLite's unary `+column` (a planner hint: "not by this column's index") is no operator on text
    in PostgreSQL, whose planner takes no hints: drop it."""
    for column in columns:
        sqlite_text = sqlite_text.replace(f"+{column}", column)
    text, numbered = respell(sqlite_text)
    if numbered:
        raise ValueError("a twin is derived from a statement with named or ? parameters only")
    return text


def _retention() -> types.ModuleType:
    from .. import retention

    twins = types.ModuleType("retention_twins")
    twins.DELETE_RUNS = _without_plan_hints(retention.DELETE_RUNS, "status", "lease_owner")  # type: ignore[attr-defined]
    return twins


def _reads() -> types.ModuleType:
    twins = types.ModuleType("reads_twins")
    # The pairs asked arrive as a JSON array of [id, version]: json_each's rows are its elements.
    twins.BUNDLE_SOURCES = (  # type: ignore[attr-defined]
        "SELECT b.bundle_id, b.bundle_version, b.source, b.sha256 FROM json_array_elements(CAST(%s AS json)) "
        "AS j JOIN bundles AS b ON b.bundle_id = j.value ->> 0 AND b.bundle_version = j.value ->> 1 "
        "WHERE b.removed_at IS NULL"
    )
    return twins


def register_all() -> None:
    from .. import reads, retention

    register_twins(retention, _retention())
    register_twins(reads, _reads())
