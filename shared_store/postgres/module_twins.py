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


def _webhooks() -> types.ModuleType:
    from .. import webhooks

    twins = types.ModuleType("webhooks_twins")
    # Due deliveries taken by one sender each (as the runs' claim): SQLite's `UPDATE ... WHERE id IN
    # (SELECT ... LIMIT n)` reads its candidates from a snapshot, so under READ COMMITTED two senders
    # both took (and POSTed) the same delivery. Locked with SKIP LOCKED, each is re-checked on its
    # newest version and a delivery another sender is taking is stepped over.
    returning = webhooks.CLAIM_DUE.split(" RETURNING ", 1)[1]
    twins.CLAIM_DUE = (  # type: ignore[attr-defined]
        "WITH c AS (SELECT delivery_id FROM webhook_deliveries WHERE status = 'pending' "
        "AND next_attempt_at <= %(now)s AND (claimed_until IS NULL OR claimed_until < %(now)s) "
        "ORDER BY next_attempt_at LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
        "UPDATE webhook_deliveries w SET claimed_until = %(until)s, attempts = w.attempts + 1, "
        "updated_at = %(iso)s FROM c WHERE w.delivery_id = c.delivery_id RETURNING "
        + ", ".join(f"w.{column.strip()}" for column in returning.split(","))
    )
    return twins


def _bulk_ops() -> types.ModuleType:
    from .. import bulk_ops

    twins = types.ModuleType("bulk_ops_twins")
    text, _ = respell(bulk_ops.TAKE_EXPANDING)
    twins.TAKE_EXPANDING = f"{text} FOR UPDATE SKIP LOCKED"  # type: ignore[attr-defined]
    return twins


def register_all() -> None:
    from .. import bulk_ops, retention, webhooks

    register_twins(retention, _retention())
    register_twins(webhooks, _webhooks())
    register_twins(bulk_ops, _bulk_ops())
