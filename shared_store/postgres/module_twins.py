"""PostgreSQL twins of statements kept beside the modules that run them (not in queries.py), under the
same names (dialect.register_twins maps them by the SQLite text of that name). Most of those modules'
statements respell mechanically; the ones here do not."""

from __future__ import annotations

import types

from .dialect import register_twins, respell


def _reads() -> types.ModuleType:
    twins = types.ModuleType("reads_twins")
    # The pairs asked arrive as a JSON array of [id, version]: json_each's rows are its elements.
    twins.BUNDLE_SOURCES = (  # type: ignore[attr-defined]
        "SELECT b.bundle_id, b.bundle_version, b.source, b.sha256 FROM json_array_elements(CAST(%s AS json)) "
        "AS j JOIN bundles AS b ON b.bundle_id = j.value ->> 0 AND b.bundle_version = j.value ->> 1 "
        "WHERE b.removed_at IS NULL"
    )
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
    # An expansion takes its operation locked; a second runner steps over it (each counted the same
    # batch into `matched` otherwise).
    text, _ = respell(bulk_ops.TAKE_EXPANDING)
    twins.TAKE_EXPANDING = f"{text} FOR UPDATE SKIP LOCKED"  # type: ignore[attr-defined]
    return twins


def register_all() -> None:
    from .. import bulk_ops, reads, webhooks

    register_twins(reads, _reads())
    register_twins(webhooks, _webhooks())
    register_twins(bulk_ops, _bulk_ops())
