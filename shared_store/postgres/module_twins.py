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


def register_all() -> None:
    from .. import retention

    register_twins(retention, _retention())
