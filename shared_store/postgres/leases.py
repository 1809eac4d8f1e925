"""Claims, expired-lease takeover and renewal on PostgreSQL (statements.py says why they differ
from SQLite's). Each call is one statement: run it on an autocommit connection (or inside the
caller's transaction)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import statements as s
from .retry import retrying

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Claimed:
    run_id: str
    epoch: int
    priority: int
    claim_order: float | None
    stalled_claims: int


def claim_runs(
    conn: psycopg.Connection,
    owner: str,
    *,
    n: int,
    lease_s: float,
    labels: list[str] | None = None,
) -> list[Claimed]:
    """Lease up to n due runs to `owner`, in claim order (higher priority first); never a run another
    claimer holds or is claiming right now."""
    sql = s.CLAIM_RUNS if labels else s.CLAIM_RUNS_UNLABELLED
    params = {"owner": owner, "n": n, "lease_s": lease_s, "labels": json.dumps(sorted(labels or []))}
    rows = retrying(conn, lambda: conn.execute(sql, params).fetchall())
    claimed = [Claimed(str(r[0]), int(r[1]), int(r[2]), r[3], int(r[4])) for r in rows]
    # RETURNING comes in the UPDATE's row order, not the claim order.
    claimed.sort(key=lambda c: (-c.priority, c.claim_order if c.claim_order is not None else 0.0))
    return claimed


def reclaim_expired(conn: psycopg.Connection, *, n: int = 1_000) -> list[tuple[str, int]]:
    """Put up to n runs whose lease expired (database clock) back in the claimable set."""
    rows = retrying(conn, lambda: conn.execute(s.RECLAIM_EXPIRED, {"n": n}).fetchall())
    return [(str(r[0]), int(r[1])) for r in rows]


def renew_lease(conn: psycopg.Connection, run_id: str, owner: str, epoch: int, *, lease_s: float) -> bool:
    """Extend a held lease; False when `owner` at `epoch` no longer holds it."""
    params = {"run_id": run_id, "owner": owner, "epoch": epoch, "lease_s": lease_s}
    return retrying(conn, lambda: conn.execute(s.RENEW_LEASE, params).fetchone()) is not None
