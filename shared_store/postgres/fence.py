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
