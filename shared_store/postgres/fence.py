"""The fenced ledger append on PostgreSQL: the run row's lock first (statements.APPEND_LEDGER_FENCED),
so a stale holder's write changes nothing even while a takeover commits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LeaseLost
from . import statements as s
from .retry import retrying

if TYPE_CHECKING:
    import psycopg


def append_fenced(
    conn: psycopg.Connection,
    run_id: str,
    owner: str,
    epoch: int,
    record: bytes,
    *,
    step_status: str | None = None,
    idempotency_key: str | None = None,
) -> int:
    """Append one ledger record as the holder `owner` at `epoch`; returns its dense seq. Raises
    LeaseLost (nothing written) when that lease is no longer held."""
    params = {
        "run_id": run_id,
        "owner": owner,
        "epoch": epoch,
        "record": record,
        "step_status": step_status,
        "idempotency_key": idempotency_key,
    }
    row = retrying(conn, lambda: conn.execute(s.APPEND_LEDGER_FENCED, params).fetchone())
    if row is None:
        raise LeaseLost(run_id, owner, epoch)
    return int(row[0])


def append_unleased(
    conn: psycopg.Connection, run_id: str, record: bytes, *, step_status: str | None = None
) -> int | None:
    """Append to a run no runner holds (tools, tests); None when a runner holds it or it is unknown."""
    params = {"run_id": run_id, "record": record, "step_status": step_status, "idempotency_key": None}
    row = retrying(conn, lambda: conn.execute(s.APPEND_LEDGER_UNLEASED, params).fetchone())
    return None if row is None else int(row[0])


def fire_schedule_fenced(
    conn: psycopg.Connection,
    run_id: str,
    owner: str,
    epoch: int,
    *,
    fire_at: float,
    next_fire_at: float | None,
    child_run_id: str,
    workflow_id: str,
    now: str,
    session_id: str | None = None,
) -> str | None:
    """Fire the schedule of parent `run_id` at `fire_at` as its holder: advance it and enqueue the child
    in one transaction; returns the child's id, None when that firing already happened. Raises
    LeaseLost (nothing written) when `owner` at `epoch` no longer holds the parent."""
    params = {
        "run_id": run_id,
        "owner": owner,
        "epoch": epoch,
        "fire_at": fire_at,
        "next_fire_at": next_fire_at,
        "child_run_id": child_run_id,
        "workflow_id": workflow_id,
        "session_id": session_id,
        "now": now,
    }
    with conn.transaction():
        if conn.execute(s.LOCK_HELD_RUN, params).fetchone() is None:
            raise LeaseLost(run_id, owner, epoch)
        if conn.execute(s.ADVANCE_SCHEDULE, params).fetchone() is None:
            return None
        conn.execute(s.ENQUEUE_CHILD, params)
    return child_run_id
