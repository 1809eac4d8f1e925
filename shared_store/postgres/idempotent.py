"""Idempotent starts (Idempotency-Key) and command ids on PostgreSQL: the key's first request wins,
every duplicate, concurrent or not, is answered with the winner's run / command (statements.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import statements as s

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class KeyedStart:
    run_id: str
    created: bool  # False: a duplicate, answered with the first request's run
    request_sha256: str


def register_start_key(
    conn: psycopg.Connection, key: str, run_id: str, request_sha256: str, created_at: str
) -> KeyedStart:
    """Bind `key` to `run_id` unless it is bound already; returns the run the key names. Call it in
    the transaction that enqueues the run (roll back on created=False)."""
    params = {
        "idempotency_key": key,
        "run_id": run_id,
        "request_sha256": request_sha256,
        "created_at": created_at,
    }
    if conn.execute(s.INSERT_START_KEY, params).fetchone() is not None:
        return KeyedStart(run_id, True, request_sha256)
    row = conn.execute(s.START_KEY, (key,)).fetchone()
    if row is None:  # only if the winner's row was deleted since (retention): bind it now
        return register_start_key(conn, key, run_id, request_sha256, created_at)
    return KeyedStart(str(row[0]), False, str(row[1]))


@dataclass(frozen=True)
class Appended:
    seq: int
    duplicate: bool


def insert_command(
    conn: psycopg.Connection,
    command_id: str,
    run_id: str,
    type_: str,
    payload: bytes,
    ts: str,
    *,
    client_id: str | None = None,
    request_id: str | None = None,
) -> Appended:
    """Append a command unless its command_id exists; returns its seq either way."""
    params = {
        "command_id": command_id,
        "run_id": run_id,
        "type": type_,
        "payload": payload,
        "ts": ts,
        "client_id": client_id,
        "request_id": request_id,
    }
    row = conn.execute(s.INSERT_COMMAND, params).fetchone()
    if row is not None:
        return Appended(int(row[0]), False)
    existing = conn.execute(s.COMMAND_SEQ, (command_id,)).fetchone()
    assert existing is not None, "a conflicting command_id is committed before ON CONFLICT returns"
    return Appended(int(existing[0]), True)
